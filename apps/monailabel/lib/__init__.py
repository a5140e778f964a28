"""The segcft MONAI Label app's tasks (``lib`` is on the server's ``PYTHONPATH``)."""
