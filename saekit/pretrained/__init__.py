"""The SAEs shipped with saekit for the default model, with their evaluation cards and feature statistics.

    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    stats = saekit.pretrained.stats("gemma-3-270m", "resid_post.6")   # FeatureStats: dashboards open at once
    saekit.pretrained.card("gemma-3-270m", "resid_post.6")            # L0, FVU, CE-loss recovered, KL, dead

Each lives in `saekit/pretrained/<model>/<name>/`: `cfg.json` + `sae_weights.safetensors` (SAELens's layout,
bf16), `card.json` (held-out evaluation) and `features/` (`FeatureStats.save`). `benchmarks/pretrain.py`
trains them all again, reproducibly (the command and the numbers are in BENCHMARKS.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..features import FeatureStats
    from ..saes import Sae

ROOT = Path(__file__).resolve().parent
"""Where the shipped SAEs live (one folder per model, one subfolder per SAE)."""


def available() -> dict[str, list[str]]:
    """{model name: [SAE names]} of the shipped SAEs (names are hook points, or 'transcoder.L')."""
    out: dict[str, list[str]] = {}
    for model_dir in sorted(p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        names = sorted((p.name for p in model_dir.iterdir() if (p / "cfg.json").exists()), key=_layer_order)
        if names:
            out[model_dir.name] = names
    return out


def folder(model: str, name: str) -> Path:
    """The folder of a shipped SAE; a `ConfigError` naming what is shipped when there is no such SAE."""
    have = available()
    if model not in have:
        raise ConfigError(
            f"no SAEs are shipped for model {model!r}; shipped: {have or 'none'}. For a hub repo id or a folder, "
            f"use saekit.load_pretrained(repo_or_path, subfolder)"
        )
    if name not in have[model]:
        raise ConfigError(f"saekit ships no SAE {name!r} for {model!r}; it ships {have[model]}")
    return ROOT / model / name


def is_shipped(model: Any, name: Any) -> bool:
    """Whether (model, name) names a shipped SAE (so `load_pretrained` reads it rather than the hub)."""
    return isinstance(model, str) and isinstance(name, str) and (ROOT / model / name / "cfg.json").exists()


def load(model: str, name: str, *, device: str = "cpu", dtype: str = "float32") -> Sae:
    """A shipped SAE, in `dtype` ('float32' to compute with, 'bfloat16' as stored)."""
    import torch

    from ..saes import Sae

    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    sae = Sae.load(folder(model, name), device=device)
    sae.to(dtype=getattr(torch, dtype))
    sae.cfg.dtype = dtype
    return sae


def stats(model: str, name: str) -> FeatureStats:
    """The shipped SAE's feature statistics on held-out text (top contexts, densities, histograms...).
    Detached from the package folder: labels set on them stay in memory until `stats.save(folder)`."""
    from ..features import FeatureStats

    loaded = FeatureStats.load(folder(model, name) / "features")
    loaded.path = None  # never write users' labels into the installed package
    return loaded


def card(model: str, name: str) -> dict[str, Any]:
    """The shipped SAE's evaluation card: L0, FVU, CE-loss recovered, KL, dead fraction on held-out text."""
    return json.loads((folder(model, name) / "card.json").read_text())


def _layer_order(name: str) -> tuple[int, str]:
    tail = name.rsplit(".", 1)[-1]
    return (int(tail) if tail.isdigit() else 10**6, name)


__all__ = ["ROOT", "available", "card", "folder", "is_shipped", "load", "stats"]
