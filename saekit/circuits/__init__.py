"""Feature circuits (Marks et al. 2024, "Sparse Feature Circuits"): which SAE features and error nodes, at
which hook points, cause a behaviour, how they connect, and edits that test it.

    metric.py        metrics on logits, one number per prompt (logit_diff, target_logprob)
    inputs.py        checked SAEs and transcoders (execution order) and prompts (one token length), errors before work
    splice.py        SAEs spliced as nodes x -> decode(f) + err (transcoders: mlp_out -> decode(f(mlp_in)) + err);
                     patch, interpolate, ablate edits
    attribute.py     attribute: attribution patching / integrated gradients per node, edges above threshold
    circuit.py       Circuit: plain data (scores, edges, thresholds), prune, tables, networkx
    faithfulness.py  faithfulness/completeness curves (mean ablation), ablate (SHIFT-style edits)

Gradients run locally through the door (`Model.grad_logits`); remote models raise a RemoteError.
"""

from __future__ import annotations

from .attribute import attribute
from .circuit import ERROR, Circuit, Edge, Node
from .faithfulness import AblationResult, FaithfulnessCurve, ablate, faithfulness
from .metric import logit_diff, target_logprob

__all__ = [
    "ERROR",
    "AblationResult",
    "Circuit",
    "Edge",
    "FaithfulnessCurve",
    "Node",
    "ablate",
    "attribute",
    "faithfulness",
    "logit_diff",
    "target_logprob",
]
