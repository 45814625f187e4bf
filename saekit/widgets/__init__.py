"""saekit's Jupyter widgets (anywidget). Imported lazily: `import saekit` does not import anywidget.

- `FeatureDashboard(stats, feature=0)`: one feature.
- `FeatureBrowser(stats)`: a sortable, filterable, searchable table of every feature above a dashboard.
- `PromptInspector(model, sae, text)`: a prompt's tokens coloured by a feature, and each token's features.

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
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'saekit.widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

# intervention widgets (SteeringPanel, AblationPanel)
_WHERE.update({"SteeringPanel": "steering", "AblationPanel": "ablation"})
__all__ = sorted(_WHERE)

# training monitor (TrainingMonitor: live curves, density, newly alive latents, Stop)
_WHERE.update({"TrainingMonitor": "monitor"})
__all__ = sorted(_WHERE)
