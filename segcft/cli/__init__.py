"""The ``segcft`` command line."""
