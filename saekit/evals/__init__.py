"""Evaluations beyond reconstruction: automated interpretability, sparse probing, feature absorption.

    scoring.py         explanations, balanced accuracy / F1, the offline baseline (tokens and bigrams)
    prompts.py         chat messages for explainer and scorers, highlighting, parsing replies
    backends.py        OpenAI-compatible HTTP client (concurrency, retries, timeouts, disk cache), local LM
    activations.py     pooled activations/latents of texts, latents of token windows
    autointerp.py      explain from FeatureStats, detection and fuzzing on held-out contexts
    sparse_probing.py  top-k latent probes vs the full-activation probe (language, code, users' labels)
    spelling.py        first-letter task: vocabulary words in a few-shot prompt, activations at the word
    kprobe.py          k-sparse probing over latents, feature splitting (the main latents of a class)
    absorption.py      first-letter absorption (Chanin et al. 2024, SAEBench): full absorption rate, fraction
    report.py          `run`: one table, a plot per evaluation, evals.json
"""

from __future__ import annotations

from .absorption import absorption, first_letter_absorption
from .autointerp import AutointerpResult, autointerp
from .backends import LocalBackend, OpenAIBackend
from .report import EVALS, EvalReport, run
from .scoring import Explanation, baseline_explanation, balanced_accuracy, score_baseline
from .sparse_probing import sparse_probing
from .spelling import SpellingSet, spelling_set

__all__ = ["EVALS", "AutointerpResult", "EvalReport", "Explanation", "LocalBackend", "OpenAIBackend", "SpellingSet",
           "absorption", "autointerp", "balanced_accuracy", "baseline_explanation", "first_letter_absorption", "run",
           "score_baseline", "sparse_probing", "spelling_set"]
