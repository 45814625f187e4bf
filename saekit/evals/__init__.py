"""Evaluations beyond reconstruction: automated interpretability, sparse probing, feature absorption.

    scoring.py         explanations, balanced accuracy / F1, the offline baseline (tokens and bigrams)
    prompts.py         chat messages for explainer and scorers, highlighting, parsing replies
    backends.py        OpenAI-compatible HTTP client (concurrency, retries, timeouts, disk cache), local LM
    activations.py     pooled activations/latents of texts, latents of token windows
    autointerp.py      explain from FeatureStats, detection and fuzzing on held-out contexts
    sparse_probing.py  top-k latent probes vs the full-activation probe (language, code, users' labels)
    absorption.py      first-letter absorption (Chanin et al. 2024)
    report.py          `run`: one table, a plot per evaluation, evals.json
"""

from __future__ import annotations

from .absorption import absorption
from .autointerp import AutointerpResult, autointerp
from .backends import LocalBackend, OpenAIBackend
from .report import EVALS, EvalReport, run
from .scoring import Explanation, baseline_explanation, balanced_accuracy, score_baseline
from .sparse_probing import sparse_probing

__all__ = ["EVALS", "AutointerpResult", "EvalReport", "Explanation", "LocalBackend", "OpenAIBackend",
           "absorption", "autointerp", "balanced_accuracy", "baseline_explanation", "run", "score_baseline",
           "sparse_probing"]
