"""Steering, measured: does adding a feature's direction make the model talk about the feature's concept,
and what does it cost in fluency? Compared with a steering vector that needs no SAE.

`steering_eval(model, sae, feature, prompts, stats=stats)` samples continuations of each prompt at several
strengths, for two methods that add a vector of the same norm at the SAE's hook point:

- 'sae': the feature's decoder direction `W_dec[feature]` (`Steer((sae, feature), s, unit='max_act')`);
- 'diff_means': the difference of mean activations between concept texts and other texts, normalised
  (AxBench's DiffMean baseline, Wu et al. 2025); by default the concept texts are the feature's top
  contexts and the other texts held-out corpus text.

Each continuation is scored, unsteered (the steering is off while scoring):

- concept: the feature's mean activation over the generated tokens, in units of its maximum activation
  over the corpus (the model re-reads the generated text without steering, so this measures the text);
- concept hits: the fraction of continuations in which the feature fires on at least one generated token
  (re-read unsteered; for a feature of one word, the share of continuations that use the word);
- concept tokens: the fraction of generated tokens that are among the feature's peak tokens;
- fluency: the mean negative log-likelihood per generated token under the unsteered model (lower is
  more fluent; the unsteered continuation is the reference).

The result (`SteeringEval`) has one row per (method, strength), the unsteered reference as strength 0,
`best(...)` (the strongest concept score whose fluency stays within a margin of the reference) and
`plot()` (concept against fluency). A weak or negative result is a result: it is reported, not hidden.

Which features steer? `output_scores(model, sae, features, stats)` measures, for each candidate, how much
steering it at 1 x its max activation raises the log-probability that the next token is one of the tokens
the feature itself peaks on (one clean + steered forward per feature and prompt, no sampling). Features
that fire on a concept ("input" features) do not always write it ("output" features); Arad et al. (2025,
"SAEs are good for steering, if you select the right features") found that filtering by such an output
score is what makes SAE steering work. Typical use: rank features for a concept's texts with
`features_for_text(..., rank="coverage")`, then keep the candidates with the highest output score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import InterventionError
from .interventions import Steer, check_fit, max_activations

if TYPE_CHECKING:
    from .features import FeatureStats
    from .lm import Model

METHODS = ("sae", "diff_means")


@dataclass
class SteeringPoint:
    """The scores of one method at one strength, averaged over prompts and samples."""

    method: str
    """'none' (unsteered reference), 'sae' or 'diff_means'."""
    strength: float
    """In the evaluation's unit (0 for the reference)."""
    raw_strength: float
    """Norm of the added vector, in raw activation units."""
    concept: float
    """Mean activation of the feature on the generated tokens, re-read unsteered, / its max activation."""
    concept_tokens: float
    """Fraction of generated tokens that are among the feature's peak tokens."""
    nll: float
    """Mean negative log-likelihood per generated token under the unsteered model (fluency; lower is better)."""
    samples: list[str] = field(default_factory=list)
    """The generated continuations (prompt excluded)."""
    concept_hits: float = 0.0
    """Fraction of continuations in which the feature fires on at least one generated token (re-read unsteered)."""

    def to_dict(self) -> dict[str, Any]:
        keys = ("method", "strength", "raw_strength", "concept", "concept_hits", "concept_tokens", "nll", "samples")
        return {k: getattr(self, k) for k in keys}


@dataclass
class SteeringEval:
    """What `steering_eval` measured for one feature."""

    feature: int
    hookpoint: str
    unit: str
    """'max_act': strengths are multiples of the feature's max activation (`scale`)."""
    scale: float
    """Raw activation units per unit of strength."""
    prompts: list[str]
    concept_tokens: list[str]
    """The peak tokens counted by `concept_tokens`."""
    points: list[SteeringPoint]
    """The unsteered reference first, then each method's strengths in increasing order."""

    @property
    def reference(self) -> SteeringPoint:
        return self.points[0]

    def method(self, name: str) -> list[SteeringPoint]:
        if name not in ("none", *METHODS):
            raise InterventionError(f"unknown method {name!r}; methods: none, {', '.join(METHODS)}")
        return [p for p in self.points if p.method == name]

    def best(self, method: str = "sae", max_nll_increase: float = 1.0) -> SteeringPoint:
        """The `method`'s point with the highest concept score whose fluency NLL is at most
        `max_nll_increase` nats per token above the unsteered text (the reference itself when none is)."""
        ok = [p for p in self.method(method) if p.nll <= self.reference.nll + max_nll_increase]
        return max(ok, key=lambda p: p.concept, default=self.reference)

    def table(self) -> "pandas.DataFrame":  # noqa: F821
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in p.to_dict().items() if k != "samples"} for p in self.points])

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature, "hookpoint": self.hookpoint, "unit": self.unit, "scale": self.scale,
            "prompts": self.prompts, "concept_tokens": self.concept_tokens, "points": [p.to_dict() for p in self.points],
        }

    def plot(self, ax=None):
        """Concept score against fluency NLL, one line per method, strengths written at the points."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 4))
        ref = self.reference
        ax.scatter([ref.nll], [ref.concept], marker="*", s=160, color="black", zorder=3, label="unsteered")
        for name, color in zip(METHODS, ("tab:blue", "tab:orange")):
            pts = self.method(name)
            if not pts:
                continue
            ax.plot([ref.nll] + [p.nll for p in pts], [ref.concept] + [p.concept for p in pts], "o-", color=color,
                    label="SAE feature" if name == "sae" else "difference of means")
            for p in pts:
                ax.annotate(f"{p.strength:g}", (p.nll, p.concept), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("fluency: NLL per generated token under the unsteered model (nats, lower is better)")
        ax.set_ylabel("concept: feature activation on the text / max activation")
        ax.set_title(f"steering feature {self.feature} at {self.hookpoint} (strength in x max activation)")
        ax.legend(fontsize=8)
        return ax


def output_scores(
    model: Model,
    sae: Any,
    features: Sequence[int],
    stats: FeatureStats,
    *,
    prompts: Sequence[str] = ("I think that", "Yesterday, we"),
    strength: float = 1.0,
    n_tokens: int = 5,
    progress: bool = True,
) -> "pandas.DataFrame":  # noqa: F821
    """How much steering each feature (at `strength` x its max activation) raises log P(the next token is one
    of its `n_tokens` most frequent peak tokens) after each prompt, averaged over `prompts`: a DataFrame indexed
    by feature with output_score (nats), peak_tokens and density, highest score first (module docstring)."""
    import pandas as pd

    from .interventions import measure

    check_fit(model, sae)
    prompts = _check_prompts(prompts)
    strength = _check_strength(strength)
    feats = [int(f) for f in features]
    if not feats:
        raise InterventionError("output_scores: features is empty: pass the candidates to score, e.g. the index of "
                                "features_for_text(model, sae, texts, stats, rank='coverage')")
    scales = max_activations(stats, sae, feats, "output_scores")  # raises for a feature that never fired
    rows = []
    for f in tqdm(feats, desc="output scores", unit="feature", disable=not progress):
        ids = concept_token_ids(stats, f, n_tokens)
        edit = Steer(None, (sae, f), strength, unit="max_act", scale=scales[f])
        gains = []
        for p in prompts:
            e = measure(model, p, edit, tokens=ids, top=0)
            gains.append(float(torch.logsumexp(e.logp_edited[-1], -1) - torch.logsumexp(e.logp_clean[-1], -1)))
        rows.append({"feature": f, "output_score": sum(gains) / len(gains),
                     "peak_tokens": " | ".join(stats.token_str(i) for i in ids), "density": float(stats.density[f])})
    return pd.DataFrame(rows).set_index("feature").sort_values("output_score", ascending=False, kind="stable")


def diff_of_means(
    model: Model, hookpoint: str, concept_texts: Sequence[str], other_texts: Sequence[str], *, context_len: int = 64,
    batch_size: int = 8,
) -> Tensor:
    """mean activation on `concept_texts` - mean on `other_texts` at `hookpoint` [d_model] (real tokens only,
    the separator left out): the SAE-free steering direction of AxBench's DiffMean baseline."""
    from .data import contexts

    for what, texts in (("concept_texts", concept_texts), ("other_texts", other_texts)):
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InterventionError(f"diff_of_means: {what} must be a non-empty list of non-empty strings")
    means = []
    for texts in (concept_texts, other_texts):
        ctx = contexts(model, list(texts), context_len=context_len, min_tokens=1)
        batches = [(ctx.input_ids[s : s + batch_size], ctx.attention_mask[s : s + batch_size]) for s in range(0, len(ctx), batch_size)]
        parts = model.capture_batches(batches, hookpoint, _sum_rows)
        means.append(sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1))
    return means[0] - means[1]


def _sum_rows(acts_BTD: Tensor, keep_BT: Tensor) -> tuple[Tensor, int]:
    """A reduction for `Model.capture_batches`: (sum of kept activation rows [D], kept tokens)."""
    x = acts_BTD[keep_BT.to(acts_BTD.device)].float()
    return x.sum(0).cpu(), int(x.shape[0])


def steering_eval(
    model: Model,
    sae: Any,
    feature: int,
    prompts: Sequence[str],
    *,
    stats: FeatureStats,
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    methods: Sequence[str] = METHODS,
    n_samples: int = 4,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float = 0.9,
    concept_texts: Sequence[str] | None = None,
    other_texts: Sequence[str] | None = None,
    n_concept_tokens: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> SteeringEval:
    """Steer `feature` of `sae` at each strength (multiples of its max activation in `stats`) on each prompt,
    `n_samples` sampled continuations each, and score concept and fluency; see the module docstring."""
    hookpoint = check_fit(model, sae)
    f = int(feature)
    scale = max_activations(stats, sae, [f], "steering_eval")[f]  # raises for a feature that never fired
    prompts = _check_prompts(prompts)
    strengths = sorted(_check_strength(s) for s in strengths)
    if not strengths:
        raise InterventionError("steering_eval: strengths is empty: pass e.g. strengths=(1, 2, 4)")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InterventionError(f"steering_eval: methods must be a non-empty subset of {METHODS}, got {list(methods)}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise InterventionError(f"steering_eval: n_samples must be a positive int, got {n_samples!r}")
    concept_ids = concept_token_ids(stats, f, n_concept_tokens)
    concept_keys = {_key(stats.token_str(i)) for i in concept_ids} - {""}
    directions: dict[str, Any] = {"sae": (sae, f)}
    if "diff_means" in methods:
        c_texts = list(concept_texts) if concept_texts is not None else _top_texts(stats, f)
        o_texts = list(other_texts) if other_texts is not None else _other_texts(model)
        directions["diff_means"] = diff_of_means(model, hookpoint, c_texts, o_texts)

    enc_f = _feature_reader(sae, f)
    jobs = [(m, s) for m in methods for s in strengths]
    bar = tqdm(total=len(jobs) * len(prompts), desc="steering eval", unit="gen", disable=not progress)
    reference: list[tuple[Tensor, Tensor]] = []
    results: dict[tuple[str, float], list[tuple[Tensor, Tensor]]] = {}
    for m, s in jobs:
        edit = Steer(hookpoint, directions[m], s, unit="max_act", scale=scale)
        for i, p in enumerate(prompts):
            ids = model.encode_prompt(p).repeat(n_samples, 1)  # [n, T]: n samples of one prompt
            default, steered = model.generate(
                ids, [edit], max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                seed=seed + i,
            )
            if len(reference) < len(prompts):
                reference.append((ids, default))
            results.setdefault((m, s), []).append((ids, steered))
            bar.update(1)
    bar.close()

    def score(method: str, strength: float, runs: list[tuple[Tensor, Tensor]]) -> SteeringPoint:
        acts, nll, hits, n_tok, texts, fired = 0.0, 0.0, 0, 0, [], 0
        for ids, new in runs:
            full = torch.cat([ids, new], dim=1)  # [n, T + new]
            T = ids.shape[1]
            x = model.capture(full, [hookpoint])[hookpoint][:, T:].float()  # [n, new, D], unsteered
            z_nT = enc_f(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1])  # [n, new]
            acts += float(z_nT.sum())
            fired += int((z_nT > 0).any(1).sum())
            nll += float(model.token_nll(full)[:, T - 1 :].sum())  # the NLL of each generated token
            for row in new.tolist():
                hits += sum(_key(model.tokenizer.decode([t])) in concept_keys for t in row)
                texts.append(model.tokenizer.decode(row, skip_special_tokens=True))
            n_tok += new.numel()
        return SteeringPoint(method, strength, strength * scale, acts / n_tok / scale, hits / n_tok, nll / n_tok, texts,
                             fired / max(len(texts), 1))

    points = [score("none", 0.0, reference)]
    points += [score(m, s, results[(m, s)]) for m, s in jobs]
    return SteeringEval(f, hookpoint, "max_act", scale, prompts, [stats.token_str(i) for i in concept_ids], points)


# -- helpers ------------------------------------------------------------------------------------------


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts) if prompts is not None else []
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InterventionError(f"steering_eval: prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    return prompts


def _check_strength(s: Any) -> float:
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise InterventionError(f"steering_eval: strengths must be numbers, got {s!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise InterventionError(f"steering_eval: strengths must be positive and finite (0 is the reference), got {s!r}")
    return v


def _key(token: str) -> str:
    return token.strip().lower()


def concept_token_ids(stats: Any, f: int, n: int) -> list[int]:
    """The ids of the `n` most frequent peak tokens of feature `f`'s top contexts (what `concept_tokens` and
    `output_scores` count)."""
    left = stats.meta["window"][0]
    ids = stats.tensors["top_tokens"][f, :, left][stats.tensors["top_context"][f] >= 0]
    ids = ids[ids >= 0]
    if ids.numel() == 0:
        raise InterventionError(f"steering_eval: feature {f} has no top contexts in these statistics")
    uniq, counts = torch.unique(ids, return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    return [int(uniq[i]) for i in order[:n]]


def _top_texts(stats: Any, f: int) -> list[str]:
    texts = ["".join(e["tokens"]) for e in stats.examples(f, "top")]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InterventionError(f"steering_eval: feature {f} has no top contexts to build a difference of means; pass concept_texts=")
    return texts


def _other_texts(model: Model, n: int = 64) -> list[str]:
    """Held-out corpus text (the test split), `n` documents' first 400 characters."""
    from .data import corpus

    out = []
    for doc in corpus(split="test", seed=1):
        if doc.text.strip():
            out.append(doc.text[:400])
        if len(out) >= n:
            break
    return out


def _feature_reader(sae: Any, f: int):
    """x [N, D] -> the activation of feature `f` [N] (the SAE's own encoder: TopK keeps its competition)."""

    def read(x_ND: Tensor) -> Tensor:
        with torch.no_grad():
            return sae.encode(x_ND.to(sae.W_dec.device, sae.W_dec.dtype))[:, f].float().cpu()

    return read


__all__ = ["SteeringEval", "SteeringPoint", "diff_of_means", "output_scores", "steering_eval", "concept_token_ids", "METHODS"]
