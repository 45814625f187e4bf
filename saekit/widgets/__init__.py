"""saekit's Jupyter widgets (anywidget). Imported lazily: `import saekit` does not import anywidget.

- `FeatureDashboard(stats, feature=0)`: one feature.
- `FeatureBrowser(stats)`: a sortable, filterable, searchable table of every feature above a dashboard.
- `PromptInspector(model, sae, text)`: a prompt's tokens coloured by a feature, and each token's features.
- `SteeringPanel`, `AblationPanel`: edits with sliders, generated or measured live.
- `TrainingMonitor()`: curves, density histogram and newly alive latents while `saekit.train` runs; Stop.
- `CircuitView(circuit, stats)`: a feature circuit by layer; click a node for its dashboard or to ablate it.
- `SplitTree(splits, stats)`, `FeatureMap.of(sae, stats)`: features across widths, and a 2-D map of them.

Every widget has `to_html(path)` (standalone, offline). `saekit.widgets.base` holds the shared plumbing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "FeatureDashboard": "dashboard",
    "FeatureBrowser": "browser",
    "FeatureTable": "browser",
    "PromptInspector": "prompt",
    "SaeWidget": "base",
    "export_html": "base",
    "SteeringPanel": "steering",
    "AblationPanel": "ablation",
    "CircuitView": "circuit",
    "SplitTree": "split_tree",
    "FeatureMap": "feature_map",
    "TrainingMonitor": "monitor",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'saekit.widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
