"""Feature circuits (Marks et al. 2024, "Sparse Feature Circuits"): which SAE features and error nodes, at
which hook points, cause a behaviour, how they connect, and edits that test it.

    metric.py        metrics on logits, one number per prompt (logit_diff, target_logprob)
    inputs.py        checked SAEs and transcoders (execution order) and prompts (one token length), errors before work
    splice.py        SAEs spliced as nodes x -> decode(f) + err (transcoders: mlp_out -> decode(f(mlp_in)) + err);
                     patch, interpolate, ablate edits
    attribute.py     attribute: attribution patching / integrated gradients per node, edges above threshold
    circuit.py       Circuit: plain data (scores, edges, thresholds), prune, tables, networkx
    faithfulness.py  faithfulness/completeness curves (mean ablation), ablate (SHIFT-style edits)
    traced.py        the same steps for a remote model: runs inside traces (`Model.spliced_runs`), plain tensors back

A local model's forwards run through the door with torch hooks (`Model.grad_logits`) and are differentiated
here. A remote model (NDIF, or remote='local') runs every step inside traces on the server: the SAEs travel
as plain tensors, the metric as its plain description (so it must be `logit_diff` or `target_logprob`; any
other callable raises a CircuitError before any request), and node values, metrics, gradients and edge
weights come back. `attribute` makes 3 requests (one more with counterfactual prompts, one more for edges),
`faithfulness` 2 or 3 and `ablate` 2, whatever the number of steps, hook points or thresholds. The server must
allow gradients inside traces (`torch.autograd.grad` in the trace body, on a forward with autograd on):
NDIF's open-source server runs traces without inference mode, its parameters frozen, which is what the
loopback test server (tests/ndif_loopback.py) copies; the real NDIF was not reached from here (no network).
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
