"""The deep structural causal model: the causal graph, the parent mechanisms and interventions.

``CausalGraph`` is the DAG over the parent variables, ``ParentSCM`` their mechanisms
(conditional flows and Bernoullis) with abduction and counterfactual prediction, and
``parse_do`` / ``resolve`` turn user interventions into per-sample target values.
"""

from segcft.causal.graph import MECHANISM_KINDS, CausalGraph
from segcft.causal.interventions import Intervention, parse_do, resolve, support_from_data
from segcft.causal.parents import ParentSCM, fit_parent_scm, parent_stats

__all__ = [
    "MECHANISM_KINDS",
    "CausalGraph",
    "Intervention",
    "ParentSCM",
    "fit_parent_scm",
    "parent_stats",
    "parse_do",
    "resolve",
    "support_from_data",
]
