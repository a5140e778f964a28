"""segcft: segmentor-guided counterfactual image synthesis on MONAI.

Packages depend one way: ``utils`` <- ``measure`` <- ``data`` <- ``models`` <- ``causal``
<- ``cft`` <- ``evaluate`` <- ``cli``.
"""

__version__ = "0.1.0"
