"""segcft: segmentor-guided counterfactual image synthesis on MONAI.

Packages depend one way: ``utils``, ``figures`` <- ``measure`` <- ``data`` <- ``models``
<- ``causal`` <- ``engines`` <- ``cft`` <- {``evaluate``, ``serve``} <- ``cli`` (the
benchmarks and serving stand side by side, neither on the other; ``tests/test_layers.py``);
``segcft.bundle`` gathers what the MONAI bundle configs wire together.
"""

__version__ = "0.1.0"
