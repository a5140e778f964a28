"""segcft: segmentor-guided counterfactual image synthesis on MONAI.

Packages depend one way: ``utils``, ``figures`` <- ``measure`` <- ``data`` <- ``models``
<- ``causal`` <- ``engines`` <- ``cft`` <- ``evaluate`` <- ``serve`` <- ``cli``;
``segcft.bundle`` gathers what the MONAI bundle configs wire together.
"""

__version__ = "0.1.0"
