"""segcft test suite."""
