"""Evaluation: segmentor benchmarks now; the counterfactual evaluation suite later."""
