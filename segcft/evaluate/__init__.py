"""Evaluation: segmentor, generator and CFT benchmarks, and the counterfactual metrics they share."""
