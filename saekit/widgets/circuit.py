"""CircuitView: a feature circuit drawn by layer (hook points as rows, token positions or one summed column),
node size and colour by attribution, edges by weight, a threshold slider; hovering a node shows its feature's
top tokens (FeatureStats), clicking selects it (and opens its FeatureDashboard in `dashboard`) and toggles it
in an ablation set that the kernel re-evaluates (`saekit.circuits.ablate`) when model, SAEs, prompts and metric
are given."""

from __future__ import annotations

from typing import Any, Mapping

import traitlets

from ..circuits import ERROR, Circuit, ablate
from ..errors import WidgetError
from .base import SaeWidget, error_message

MAX_NODES = 300
"""Most nodes sent to the front end (the largest |score| first)."""


class CircuitView(SaeWidget):
    """`CircuitView(circuit, stats=None, *, model=None, saes=None, prompts=None, metric=None)`.

    `stats`: {hookpoint: FeatureStats} for hover tokens and dashboards. With `model`, `saes`, `prompts` (texts
    of one token length) and `metric`, clicking nodes builds `ablation` ([[hookpoint, feature], ...]) and
    `ablation_result` holds the metric before and after ablating them (zero, error terms kept).

        view = CircuitView(circuit, stats, model=model, saes=saes, prompts=texts, metric=metric)
        display(view, view.dashboard)     # the dashboard follows the clicked node
        view.ablation = [["resid_post.10", 814]]; view.ablation_result
    """

    _asset_js = "circuit_view.js"
    _asset_css = "circuit_view.css"
    _snapshot_height = 560

    threshold = traitlets.Float(0.0).tag(sync=True)
    """Nodes with |score| below this are hidden (the slider)."""
    selected = traitlets.List([]).tag(sync=True)
    """The clicked node [hookpoint, position or None, feature (-1: error)], or []."""
    ablation = traitlets.List([]).tag(sync=True)
    """Features to ablate, [[hookpoint, feature], ...] (clicking a feature node toggles it)."""
    ablation_result = traitlets.Dict({}, read_only=True).tag(sync=True)
    """{'features', 'metric_clean', 'metric_ablated', 'change', 'flipped'} of the last ablation; {} before."""
    error = traitlets.Unicode("", read_only=True).tag(sync=True)
    """Why the last ablation failed; '' when all is well."""
    _graph = traitlets.Dict({}).tag(sync=True)
    _live = traitlets.Bool(False).tag(sync=True)

    def __init__(self, circuit: Circuit, stats: Mapping[str, Any] | None = None, *, model: Any = None, saes: Any = None,
                 prompts: Any = None, metric: Any = None, **kwargs: Any) -> None:
        if not isinstance(circuit, Circuit):
            raise WidgetError(f"CircuitView takes a Circuit from saekit.attribute, got {type(circuit).__name__}")
        if stats is not None and not isinstance(stats, Mapping):
            raise WidgetError("stats must be a dict {hookpoint: FeatureStats} (e.g. from saekit.pretrained.stats)")
        live = [model, saes, prompts, metric]
        if any(x is not None for x in live) and not all(x is not None for x in live):
            raise WidgetError("live ablation needs all of model, saes, prompts and metric (or none of them)")
        self.circuit, self.stats = circuit, dict(stats or {})
        self._live_args = live if all(x is not None for x in live) else None
        kwargs.setdefault("threshold", circuit.node_threshold)
        super().__init__(**kwargs)
        self._live = self._live_args is not None
        self._graph = graph_data(circuit, self.stats)
        self.dashboard = _output()
        """An ipywidgets Output showing the clicked feature's FeatureDashboard (display it under the view)."""
        self.feature_dashboard: Any = None
        """The clicked feature's FeatureDashboard (built on the same FeatureStats), or None."""
        self.observe(self._on_selected, "selected")
        self.observe(self._on_ablation, "ablation")

    def _repr_args(self) -> str:
        return f"hookpoints={self.circuit.hookpoints}, nodes={len(self._graph.get('nodes', []))}, threshold={self.threshold:.3g}"

    def _on_selected(self, change: Any) -> None:
        sel = change["new"]
        if not sel or sel[2] == ERROR or sel[0] not in self.stats:
            return
        from IPython.display import display

        from .dashboard import FeatureDashboard

        self.feature_dashboard = FeatureDashboard(self.stats[sel[0]], feature=int(sel[2]))
        if self.dashboard is not None:
            self.dashboard.clear_output()
            with self.dashboard:
                display(self.feature_dashboard)

    def _on_ablation(self, change: Any) -> None:
        if self._live_args is not None:
            self.evaluate()

    def evaluate(self) -> dict:
        """Ablate `ablation`'s features on the prompts through the kernel; sets and returns `ablation_result`."""
        if self._live_args is None:
            raise WidgetError("CircuitView was made without model, saes, prompts and metric: nothing to evaluate")
        model, saes, prompts, metric = self._live_args
        feats: dict[str, list[int]] = {}
        for h, f in self.ablation:
            feats.setdefault(str(h), []).append(int(f))
        try:
            r = ablate(model, saes, prompts, metric, feats)
        except Exception as e:  # shown in the view; the kernel keeps running
            self.set_trait("error", error_message(e))
            return {}
        out = {"features": [list(a) for a in self.ablation], "metric_clean": float(r.metric_clean.mean()),
               "metric_ablated": float(r.metric_ablated.mean()), "change": r.change, "flipped": r.flipped}
        self.set_trait("error", "")
        self.set_trait("ablation_result", out)
        return out


def _output():
    try:
        import ipywidgets

        return ipywidgets.Output()
    except ImportError:  # pragma: no cover - ipywidgets comes with anywidget
        return None


def graph_data(circuit: Circuit, stats: Mapping[str, Any]) -> dict:
    """The plain data the front end draws: rows, columns, the largest nodes (with hover tokens), edges."""
    scores = circuit.scores
    summed = circuit.summed
    rows = list(circuit.hookpoints)
    cols = ["all positions"] if summed else [t for t in circuit.tokens]
    cand = []
    for h, s in scores.items():
        flat = s.reshape(-1).abs()
        k = min(MAX_NODES, flat.numel())
        vals, idx = flat.topk(k)
        width = s.shape[-1]
        for v, i in zip(vals.tolist(), idx.tolist()):
            pos, col = (None, i) if summed else divmod(i, width)
            cand.append((v, h, pos, ERROR if col == width - 1 else col))
    cand.sort(key=lambda c: -c[0])
    cand = [c for c in cand[:MAX_NODES] if c[0] > 0]
    nodes, ids = [], {}
    for _, h, pos, f in cand:
        key = (h, pos, f)
        ids[key] = len(nodes)
        score = float(scores[h][f if summed else (pos, f)]) if f != ERROR else float(scores[h][-1] if summed else scores[h][pos, -1])
        tokens = []
        if f != ERROR and h in stats:
            try:
                tokens = [str(t) for t in stats[h].peak_tokens(f, 5)]
            except Exception:  # statistics that cannot say: no hover tokens
                tokens = []
        nodes.append({"hookpoint": h, "row": rows.index(h), "col": 0 if pos is None else pos, "position": pos,
                      "feature": f, "score": score, "tokens": tokens})
    edges = []
    for e in circuit.edges:
        u, d = ids.get(tuple(e.up)), ids.get(tuple(e.down))
        if u is not None and d is not None and abs(e.weight) >= circuit.edge_threshold:
            edges.append([u, d, float(e.weight)])
    top = max((abs(n["score"]) for n in nodes), default=1.0)
    return {"rows": rows, "cols": cols, "nodes": nodes, "edges": edges, "max_score": top,
            "metric_clean": circuit.metric_clean, "metric_patch": circuit.metric_patch, "method": circuit.method}
