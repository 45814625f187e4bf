"""`Circuit`: the result of `saekit.attribute` as plain data (node scores, edges, thresholds).

A node is (hookpoint, position, index): `index` a feature, or -1 for the SAE error node; `position` a token
position, or None when positions were summed. Node scores are kept for every node ([T, F + 1] per hook
point, last column the error node; [F + 1] when summed); edges only between nodes that were above the
node threshold when they were computed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import CircuitError

ERROR = -1
"""The index of a hook point's SAE error node."""


class Node(NamedTuple):
    """A circuit node: one SAE feature (or the error node, index `ERROR`) at a hook point and position."""

    hookpoint: str
    position: int | None
    """Token position, or None when positions are summed."""
    index: int
    """Feature index, or ERROR (-1) for the SAE error node."""


class Edge(NamedTuple):
    """A weighted edge from an upstream node to a downstream one (the effect through `down`)."""

    up: Node
    down: Node
    weight: float


@dataclass
class Circuit:
    """Node and edge attributions over SAE features and error nodes at several hook points."""

    hookpoints: list[str]
    """The hook points in execution order."""
    scores: dict[str, Tensor]
    """{hookpoint: [T, F + 1] (or [F + 1] summed over positions)}: each node's attribution (mean over
    prompts), the last column the error node."""
    edges: list[Edge] = field(default_factory=list)
    """Edges between nodes of consecutive hook points (computed only above the node threshold then)."""
    tokens: list[str] = field(default_factory=list)
    """The first clean prompt's tokens, one per position (labels)."""
    method: str = "ig"
    """'ig' (integrated gradients) or 'atp' (attribution patching)."""
    baseline: str = "counterfactual"
    """What the nodes were patched towards: 'counterfactual', 'zero' or 'mean'."""
    metric_clean: float = float("nan")
    """The metric on the clean prompts (mean)."""
    metric_patch: float = float("nan")
    """The metric with every hook point patched to the baseline (mean)."""
    node_threshold: float = 0.0
    """Nodes with |score| below this are outside the circuit."""
    edge_threshold: float = 0.0
    """Edges with |weight| below this are left out."""
    edge_node_threshold: float = 0.0
    """The node threshold at which edges were computed (pruning lower cannot add edges)."""

    @property
    def summed(self) -> bool:
        return next(iter(self.scores.values())).dim() == 1

    def n_latents(self, hookpoint: str) -> int:
        return int(self.scores[hookpoint].shape[-1]) - 1

    def masks(self, threshold: float | None = None, signed: bool = False) -> dict[str, Tensor]:
        """{hookpoint: bool [T, F + 1] or [F + 1]}: nodes in the circuit at `threshold` (default: the
        circuit's node threshold): |score| >= threshold, or with `signed` only the nodes whose patching
        moves the metric toward the patched run (score of the sign of metric_patch - metric_clean) by at
        least the threshold: the nodes that carry the behaviour, not those that work against it."""
        t = self.node_threshold if threshold is None else float(threshold)
        if not signed:
            return {h: s.abs() >= t for h, s in self.scores.items()}
        toward = 1.0 if self.metric_patch >= self.metric_clean else -1.0
        return {h: toward * s >= t for h, s in self.scores.items()}

    def nodes(self) -> list[tuple[Node, float]]:
        """Nodes in the circuit (|score| >= node_threshold), largest |score| first."""
        out = []
        for h, s in self.scores.items():
            mask = s.abs() >= self.node_threshold
            for idx in mask.nonzero().tolist():
                if len(idx) == 1:
                    pos, col = None, idx[0]
                else:
                    pos, col = idx
                index = ERROR if col == s.shape[-1] - 1 else col
                out.append((Node(h, pos, index), float(s[tuple(idx)])))
        out.sort(key=lambda p: -abs(p[1]))
        return out

    def kept_edges(self) -> list[Edge]:
        """Edges with |weight| >= edge_threshold whose ends are both in the circuit."""
        keep = {n for n, _ in self.nodes()}
        return [e for e in self.edges if abs(e.weight) >= self.edge_threshold and e.up in keep and e.down in keep]

    def prune(self, node_threshold: float, edge_threshold: float | None = None) -> "Circuit":
        """A copy with new thresholds (nodes |score| >= node_threshold, edges |weight| >= edge_threshold).
        Warns when nothing is left, or when going below the threshold the edges were computed at."""
        if not node_threshold >= 0:
            raise CircuitError(f"node_threshold must be >= 0, got {node_threshold!r}")
        et = self.edge_threshold if edge_threshold is None else float(edge_threshold)
        if not et >= 0:
            raise CircuitError(f"edge_threshold must be >= 0, got {edge_threshold!r}")
        out = replace(self, node_threshold=float(node_threshold), edge_threshold=et)
        if not out.nodes():
            top = max(float(s.abs().max()) for s in self.scores.values())
            warnings.warn(
                f"no node has |score| >= {node_threshold:g} (the largest is {top:.3g}): the circuit is empty; "
                "lower node_threshold", stacklevel=2,
            )
        if node_threshold < self.edge_node_threshold and self.edges:
            warnings.warn(
                f"edges were computed only between nodes with |score| >= {self.edge_node_threshold:g}; nodes "
                "below that have no edges (attribute again with a lower node_threshold for them)", stacklevel=2,
            )
        return out

    def top_features(self, n: int = 10, hookpoint: str | None = None) -> list[tuple[str, int, float]]:
        """(hookpoint, feature, score) of the `n` features with the largest |score| summed over positions
        (error nodes left out), optionally at one hook point."""
        rows = []
        for h, s in self.scores.items():
            if hookpoint is not None and h != hookpoint:
                continue
            per_F = s[..., :-1] if s.dim() == 1 else s[:, :-1].sum(0)
            k = min(n, per_F.numel())
            _, idx = per_F.abs().topk(k)
            rows += [(h, int(i), float(per_F[i])) for i in idx]
        rows.sort(key=lambda r: -abs(r[2]))
        return rows[:n]

    def to_pandas(self):
        """The nodes in the circuit as a table: hookpoint, position, token, feature (-1: error), score."""
        import pandas as pd

        rows = []
        for n, s in self.nodes():
            tok = self.tokens[n.position] if n.position is not None and n.position < len(self.tokens) else ""
            rows.append({"hookpoint": n.hookpoint, "position": n.position, "token": tok, "feature": n.index,
                         "kind": "error" if n.index == ERROR else "feature", "score": s})
        return pd.DataFrame(rows, columns=["hookpoint", "position", "token", "feature", "kind", "score"])

    def edges_table(self):
        """The kept edges as a table (up and down node fields, weight)."""
        import pandas as pd

        rows = [{"up_hookpoint": e.up.hookpoint, "up_position": e.up.position, "up_feature": e.up.index,
                 "down_hookpoint": e.down.hookpoint, "down_position": e.down.position,
                 "down_feature": e.down.index, "weight": e.weight} for e in self.kept_edges()]
        return pd.DataFrame(rows)

    def to_networkx(self):
        """A networkx DiGraph of the kept nodes (attribute 'score') and edges ('weight'); needs networkx."""
        try:
            import networkx as nx
        except ImportError as e:  # optional dependency
            raise ImportError("Circuit.to_networkx needs networkx: pip install networkx") from e
        g = nx.DiGraph()
        for n, s in self.nodes():
            g.add_node(n, score=s, hookpoint=n.hookpoint, position=n.position, feature=n.index)
        for e in self.kept_edges():
            g.add_edge(e.up, e.down, weight=e.weight)
        return g

    def __repr__(self) -> str:
        return (f"Circuit(hookpoints={self.hookpoints}, method={self.method!r}, baseline={self.baseline!r}, "
                f"nodes={len(self.nodes())}, edges={len(self.kept_edges())}, node_threshold={self.node_threshold:g})")


