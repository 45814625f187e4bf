"""Automated interpretability: explain chosen features from their FeatureStats contexts, then score each
explanation on held-out contexts by detection and fuzzing (balanced accuracy; scoring.py).

Held out: the top list is split alternately (even ranks explain, odd ranks are scored) and the quantile
samples are scored too, so the scorer never sees an explained context. Non-activating contexts come
from other features' stored windows: 'random' from randomly chosen features' samples, 'near_miss' from
the feature's decoder neighbours' top windows. With `model` and `sae` given, each candidate window is
re-read and kept only when the feature truly does not fire on it (else it is assumed, `verified` False).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import EvalError, EndpointError
from ..features.stats import FeatureStats
from .activations import window_latents
from .prompts import MalformedReply, detect_messages, explain_messages, fuzz_messages, parse_bit, parse_explanation
from .scoring import Explanation, ScoringSet, baseline_explanation, fuzzing_items, score_baseline, score_with

MIN_EXPLAIN = 2
"""Fewest activating contexts to explain from; a feature with fewer is skipped and counted."""
MIN_HELDOUT = 2
"""Fewest held-out activating contexts to score on; a feature with fewer is skipped and counted."""


@dataclass
class AutointerpResult:
    """Per-feature explanations and scores, and what was skipped."""

    rows: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)
    """Features left out by reason ('too_few_contexts', 'malformed_reply')."""
    backend: str = "baseline"

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("feature") if self.rows else pd.DataFrame()

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"features_scored": float(len(self.rows))}
        for k in ("detection_random", "detection_near_miss", "fuzzing", "detection_f1"):
            vals = [r[k] for r in self.rows if k in r]
            if vals:
                out[k] = sum(vals) / len(vals)
        out.update({f"skipped_{k}": float(v) for k, v in self.skipped.items()})
        return out


def choose_features(stats: FeatureStats, n: int, seed: int = 0) -> list[int]:
    """`n` live, not dense features at random (a fair sample, not the most interpretable ones)."""
    live = ((stats.density > 0) & ~stats.is_dense()).nonzero().flatten().tolist()
    rng = random.Random(seed)
    return sorted(rng.sample(live, min(n, len(live))))


def _window_rows(stats: FeatureStats, kind: str, feature: int) -> list[list[int]]:
    ids = stats.tensors[f"{kind}_tokens"][feature]
    ctx = stats.tensors[f"{kind}_context"][feature]
    return [r[r >= 0].tolist() for r, c in zip(ids, ctx) if c >= 0 and (r >= 0).any()]


def scoring_sets(stats: FeatureStats, features: Sequence[int], *, model=None, sae=None, n_explain: int = 8,
                 n_heldout: int = 8, n_non: int = 8, seed: int = 0
                 ) -> tuple[dict[int, list[dict]], dict[int, ScoringSet], list[int]]:
    """(explain contexts, held-out ScoringSet, skipped features) for each feature (module docstring)."""
    rng = random.Random(seed)
    explain, sets, skipped = {}, {}, []
    candidates: dict[int, dict[str, list[list[int]]]] = {}
    F = stats.n_features
    for f in features:
        top = stats.examples(f, "top")
        ex, held = top[0::2][:n_explain], top[1::2]
        seen = {e["context"] for e in top}
        held += [e for e in stats.examples(f, "sample") if e["max"] > 0 and e["context"] not in seen]
        held = held[:n_heldout]
        if len(ex) < MIN_EXPLAIN or len(held) < MIN_HELDOUT:
            skipped.append(f)
            continue
        explain[f], sets[f] = ex, ScoringSet(held)
        own = {tuple(r) for r in _window_rows(stats, "top", f) + _window_rows(stats, "sample", f)}
        rand: list[list[int]] = []
        for g in rng.sample(range(F), min(F, 2 * n_non)):
            rows = [r for r in _window_rows(stats, "sample", g) if tuple(r) not in own]
            if g != f and rows:
                rand.append(rng.choice(rows))
        near = [r for g, _ in stats.neighbours(f) for r in _window_rows(stats, "top", g)[:2] if tuple(r) not in own]
        candidates[f] = {"random": rand, "near_miss": near}
    verified = model is not None and sae is not None
    acts: dict[tuple, torch.Tensor] = {}
    if verified and candidates:
        rows = sorted({tuple(r) for c in candidates.values() for rs in c.values() for r in rs})
        feats = list(candidates)
        for r, z in zip(rows, window_latents(model, sae, [list(r) for r in rows], feats)):
            acts[r] = z
        col = {f: i for i, f in enumerate(feats)}
    for f, cand in candidates.items():
        for kind, rows in cand.items():
            keep = []
            for r in rows:
                a = acts[tuple(r)][:, col[f]].tolist() if verified else [0.0] * len(r)
                if max(a) > 0:
                    continue
                keep.append({"tokens": [stats.token_str(t) for t in r], "acts": a})
            sets[f].non_activating[kind] = keep[:n_non]
    return explain, sets, skipped


def _logit_tokens(stats: FeatureStats, f: int) -> list[str]:
    try:
        return [t for t, _ in stats.logit_tokens(f)][:8]
    except Exception:  # statistics without logit lists
        return []


def autointerp(stats: FeatureStats, features: Sequence[int] | None = None, *, model=None, sae=None,
               explainer: Any = "baseline", scorer: Any = None, n_features: int = 50, n_explain: int = 8,
               n_heldout: int = 8, n_non: int = 8, set_labels: bool = True, seed: int = 0,
               progress: bool = True) -> AutointerpResult:
    """Explain and score `features` (default: `n_features` chosen at random). `explainer` and `scorer`
    are 'baseline' (offline, no LLM) or a backend (`OpenAIBackend`, `LocalBackend`); `scorer` None uses
    the explainer. With `set_labels` the explanations become the features' labels in `stats` (in memory;
    `stats.save(folder)` keeps them)."""
    if features is None:
        features = choose_features(stats, n_features, seed)
    features = [int(f) for f in features]
    bad = [f for f in features if not 0 <= f < stats.n_features]
    if bad:
        raise EvalError(f"features {bad[:5]} are out of range 0..{stats.n_features - 1}")
    scorer = explainer if scorer is None else scorer
    explain, sets, skipped_few = scoring_sets(stats, features, model=model, sae=sae, n_explain=n_explain,
                                               n_heldout=n_heldout, n_non=n_non, seed=seed)
    skipped = {"too_few_contexts": len(skipped_few)}
    verified = model is not None and sae is not None
    # explain
    explanations: dict[int, Explanation] = {}
    if explainer == "baseline":
        explanations = {f: baseline_explanation(ex) for f, ex in explain.items()}
    else:
        fs = list(explain)
        replies = explainer.complete_many([explain_messages(explain[f], _logit_tokens(stats, f)) for f in fs])
        for f, rep in zip(fs, replies):
            try:
                if isinstance(rep, Exception):
                    raise rep
                explanations[f] = Explanation(parse_explanation(rep), (), explainer.name)
            except (MalformedReply, EndpointError):
                skipped["malformed_reply"] = skipped.get("malformed_reply", 0) + 1
    # score
    rows = []
    for f in tqdm(list(explanations), desc="autointerp", disable=not progress):
        e, ss = explanations[f], sets[f]
        if scorer == "baseline":
            if not e.patterns:
                e = Explanation(e.text, baseline_explanation(explain[f]).patterns, e.source)
            scores = score_baseline(e, ss, seed)
        else:
            scores = _score_llm(scorer, e, ss, seed)
            if scores is None:
                skipped["malformed_reply"] = skipped.get("malformed_reply", 0) + 1
                continue
        rows.append({"feature": f, "explanation": e.text, **scores, "verified": verified})
        if set_labels:  # in memory only (stats.save keeps them): shipped statistics are never rewritten
            stats.labels[f] = e.text
    name = explainer if isinstance(explainer, str) else explainer.name
    # per-feature scores for the FeatureBrowser's 'autointerp' column
    saved = stats.meta.setdefault("evals", {}).setdefault("autointerp", {})
    for r in rows:
        saved[str(r["feature"])] = {k: v for k, v in r.items() if isinstance(v, float)}
    return AutointerpResult(rows, skipped, name)


def _score_llm(backend, e: Explanation, ss: ScoringSet, seed: int) -> dict[str, float] | None:
    """Detection and fuzzing answers asked of an LLM in one batch; None when too many are malformed."""
    det_ctx = ss.activating + [c for k in ("random", "near_miss") for c in ss.non_activating.get(k, [])]
    fuzz = fuzzing_items(ss, seed)
    msgs = [detect_messages(e.text, c) for c in det_ctx] + [fuzz_messages(e.text, c, h) for c, h, _ in fuzz]
    replies = backend.complete_many(msgs)
    answers: list[bool | None] = []
    for r in replies:
        try:
            answers.append(None if isinstance(r, Exception) else parse_bit(r))
        except MalformedReply:
            answers.append(None)
    if sum(a is None for a in answers) > len(answers) // 2:
        return None
    det = {id(c): a for c, a in zip(det_ctx, answers[: len(det_ctx)])}
    fz = {(id(c), tuple(h)): (a, t) for (c, h, t), a in zip(fuzz, answers[len(det_ctx):])}
    # an unanswered item counts as a wrong answer (never guessed right)
    def detect(c):
        a = det.get(id(c))
        return (not any(x > 0 for x in c["acts"])) if a is None else a
    def fuzzf(c, h):
        a, t = fz[(id(c), tuple(h))]
        return (not t) if a is None else a
    return score_with(detect, fuzzf, ss, seed)
