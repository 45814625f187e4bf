"""Scoring an explanation: the metrics (balanced accuracy, precision/recall/F1) and the offline baseline.

A context is a dict like `FeatureStats.examples` gives: `tokens` (display strings) and `acts` (the
feature's activation on each token). The offline baseline needs no LLM: its explanation is a few of the
feature's most frequent activating tokens and bigrams, and it predicts "fires" wherever one of them
occurs. Detection asks "does the feature fire anywhere in this context?", fuzzing "are the highlighted
tokens the ones it fires on?" (Bills et al. 2023; delphi's detection and fuzzing scorers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import FeatureError


@dataclass(frozen=True)
class Explanation:
    """What a feature responds to: the text an explainer wrote, and for the baseline the patterns."""

    text: str
    """The explanation shown to people and to LLM scorers."""
    patterns: tuple[tuple[str, ...], ...] = ()
    """Token n-grams (normalised: stripped, lower case) the baseline scorer looks for; empty for LLMs."""
    source: str = "baseline"
    """Which backend wrote it ('baseline', 'openai:<model>', 'local:<model>')."""


def norm_token(s: str) -> str:
    """The key tokens are compared by: stripped of spaces and lower case ('▁The' and ' the' agree)."""
    return s.replace("▁", " ").strip().lower()


def balanced_accuracy(pred: Sequence[bool], truth: Sequence[bool]) -> float:
    """Mean of recall on positives and recall on negatives; 0.5 is chance whatever the class balance."""
    if len(pred) != len(truth):
        raise FeatureError(f"{len(pred)} predictions for {len(truth)} labels: pass one prediction per label")
    pos = [p for p, t in zip(pred, truth) if t]
    neg = [p for p, t in zip(pred, truth) if not t]
    if not pos or not neg:
        raise FeatureError("balanced accuracy needs both positive and negative examples; pass both kinds")
    return 0.5 * (sum(pos) / len(pos) + sum(1 - p for p in neg) / len(neg))


def precision_recall_f1(pred: Sequence[bool], truth: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of `pred` against `truth` (0 where undefined)."""
    tp = sum(1 for p, t in zip(pred, truth) if p and t)
    fp = sum(1 for p, t in zip(pred, truth) if p and not t)
    fn = sum(1 for p, t in zip(pred, truth) if t and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def fires(context: dict[str, Any]) -> bool:
    """Whether the feature fires anywhere in a context."""
    return any(a > 0 for a in context["acts"])


# -- the offline baseline -------------------------------------------------------------------------


def baseline_explanation(contexts: Sequence[dict[str, Any]], *, max_patterns: int = 3,
                         min_share: float = 0.15) -> Explanation:
    """The tokens and bigrams (previous token + active token) the feature fires on, counted once per
    context; greedily the patterns that cover the most not-yet-covered contexts weighted by their precision
    inside these contexts (the share of a pattern's occurrences where the feature fires, so 'big dog' beats
    'dog' when 'dog' also occurs unfired), each covering at least `min_share` of them (the first always)."""
    if not contexts:
        raise FeatureError("a baseline explanation needs at least one activating context")
    cover: dict[tuple[str, ...], set[int]] = {}
    for i, c in enumerate(contexts):
        toks = [norm_token(t) for t in c["tokens"]]
        for j, a in enumerate(c["acts"]):
            if a <= 0 or not toks[j]:
                continue
            cover.setdefault((toks[j],), set()).add(i)
            if j > 0 and toks[j - 1]:
                cover.setdefault((toks[j - 1], toks[j]), set()).add(i)
    if not cover:
        return Explanation("(no activating token)", ())
    # precision inside the explained contexts: of a pattern's occurrences, the share where the feature fires
    hits = {p: 0 for p in cover}
    occ = {p: 0 for p in cover}
    for c in contexts:
        for p in cover:
            for j in pattern_ends(c["tokens"], [p]):
                occ[p] += 1
                hits[p] += c["acts"][j] > 0
    precision = {p: hits[p] / max(occ[p], 1) for p in cover}
    chosen: list[tuple[str, ...]] = []
    covered: set[int] = set()
    n = len(contexts)
    while len(chosen) < max_patterns:
        # new contexts covered, weighted by precision; a unigram wins ties with its bigrams (more general)
        best = max(cover, key=lambda p: (round(len(cover[p] - covered) * precision[p], 6), -len(p), p))
        gain = len(cover[best] - covered)
        if chosen and gain < min_share * n or gain == 0:
            break
        chosen.append(best)
        covered |= cover[best]
        # a bigram whose active token is already a chosen unigram adds nothing
        cover = {p: s for p, s in cover.items() if p not in chosen and (p[-1],) not in chosen}
        if not cover:
            break
    text = "fires on " + ", ".join(repr(" ".join(p)) for p in chosen)
    return Explanation(text, tuple(chosen), "baseline")


def pattern_ends(tokens: Sequence[str], patterns: Sequence[tuple[str, ...]]) -> set[int]:
    """Positions where one of `patterns` ends in `tokens`."""
    toks = [norm_token(t) for t in tokens]
    out = set()
    for p in patterns:
        n = len(p)
        for j in range(n - 1, len(toks)):
            if tuple(toks[j - n + 1: j + 1]) == p:
                out.add(j)
    return out


def baseline_detect(explanation: Explanation, context: dict[str, Any]) -> bool:
    """The baseline's detection answer: does one of the patterns occur in the context?"""
    return bool(pattern_ends(context["tokens"], explanation.patterns))


def baseline_fuzz(explanation: Explanation, context: dict[str, Any], highlighted: Sequence[int]) -> bool:
    """The baseline's fuzzing answer: are at least half the highlighted tokens pattern matches?"""
    if not highlighted:
        return False
    ends = pattern_ends(context["tokens"], explanation.patterns)
    return sum(1 for j in highlighted if j in ends) * 2 >= len(highlighted)


# -- the examples each score is computed on --------------------------------------------------------


@dataclass
class ScoringSet:
    """Held-out contexts for one feature: activating ones and non-activating ones of each kind."""

    activating: list[dict[str, Any]]
    non_activating: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """By kind: 'random' (anywhere in the corpus) and 'near_miss' (from similar features' contexts)."""


def detection_items(ss: ScoringSet, kind: str) -> list[tuple[dict[str, Any], bool]]:
    """(context, fires) pairs for detection against the `kind` non-activating contexts."""
    return [(c, True) for c in ss.activating] + [(c, False) for c in ss.non_activating.get(kind, [])]


def fuzzing_items(ss: ScoringSet, seed: int = 0) -> list[tuple[dict[str, Any], list[int], bool]]:
    """(context, highlighted positions, correct) triples: each activating context once with its active
    tokens highlighted (correct) and once with as many inactive tokens highlighted (wrong)."""
    rng = random.Random(seed)
    out = []
    for c in ss.activating:
        active = [j for j, a in enumerate(c["acts"]) if a > 0]
        inactive = [j for j, a in enumerate(c["acts"]) if a <= 0]
        if not active or not inactive:
            continue
        out.append((c, active, True))
        out.append((c, sorted(rng.sample(inactive, min(len(active), len(inactive)))), False))
    return out


def score_with(detect, fuzz, ss: ScoringSet, seed: int = 0) -> dict[str, float]:
    """Balanced accuracies of a scorer (`detect(context) -> bool`, `fuzz(context, highlighted) -> bool`)
    on one feature's held-out set: detection per non-activating kind, fuzzing; with the detection
    precision/recall/F1 against random contexts. A kind with no contexts is left out."""
    out: dict[str, float] = {}
    for kind in ("random", "near_miss"):
        items = detection_items(ss, kind)
        if not ss.non_activating.get(kind) or not ss.activating:
            continue
        pred = [bool(detect(c)) for c, _ in items]
        truth = [t for _, t in items]
        out[f"detection_{kind}"] = balanced_accuracy(pred, truth)
        if kind == "random":
            out.update({f"detection_{k}": v for k, v in precision_recall_f1(pred, truth).items()})
    items = fuzzing_items(ss, seed)
    if items:
        pred = [bool(fuzz(c, h)) for c, h, _ in items]
        out["fuzzing"] = balanced_accuracy(pred, [t for _, _, t in items])
    return out


def score_baseline(explanation: Explanation, ss: ScoringSet, seed: int = 0) -> dict[str, float]:
    """`score_with` the offline baseline's pattern matching."""
    return score_with(lambda c: baseline_detect(explanation, c),
                      lambda c, h: baseline_fuzz(explanation, c, h), ss, seed)
