"""Per-feature statistics over a corpus, as plain data: `feature_stats(model, sae, texts) -> FeatureStats`.

One pass over the activation stream (`saekit.stream`) feeds one accumulator per statistic
(`saekit.features.accumulators`), which collect for every SAE latent ("feature"):

- density (fraction of tokens where it fires, act > 0), mean activation when firing, max activation;
- top-activating contexts: per context the feature's strongest token, the `top_k` strongest contexts
  kept by a streaming top-k, each stored as a window of tokens around that token with every token's
  activation (Bricken et al. 2023, "Towards Monosemanticity", show contexts the same way);
- quantile samples: a uniform reservoir of contexts where the feature fires (a streaming top-k on random
  keys), sorted by activation so `quantile_examples` can show weak, typical and strong firings;
- an activation histogram on fixed log2-spaced bins (exact counts, no second pass);
- co-occurring features: Jaccard similarity of firing sets, counted on the first `cooccurrence_tokens`
  tokens (sparse, so memory grows with tokens x L0, never with features squared);
- logit effects (top and bottom output tokens of each decoder direction through the model's final norm
  and unembedding, see `saekit.features.unembed`) and nearest features by decoder cosine similarity
  (`saekit.features.geometry`), which need no corpus pass.

Memory is bounded by features x (top_k + n_samples) x window, about 100 MB for 16k features with the
defaults; nothing grows with the corpus except the co-occurrence sample, which is capped. Results save to
a folder (`stats.safetensors` + `stats.json` + `labels.json`, no pickles) and `FeatureStats.load` reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from ..data import TokenContexts, as_documents, contexts, corpus
from ..durable import remove_stale_temporaries, save_tensors, write_json
from ..errors import FeatureError
from ..store import ActivationCache
from ..stream import ActivationBatch, cached_activations, stream_activations
from ..tokens import keep_mask
from .accumulators import (
    HIST_EDGES,
    ActivationHistogram,
    ContextSample,
    CooccurrenceSample,
    FiringStats,
    LatentBatch,
    TopContexts,
)
from .geometry import decoder_neighbours, logit_effects

if TYPE_CHECKING:
    from ..lm import Model

STATS_FILE = "stats.safetensors"
META_FILE = "stats.json"
LABELS_FILE = "labels.json"


@dataclass
class FeatureStats:
    """Everything `feature_stats` learned about each feature. Tensors are indexed by feature first."""

    n_tokens: int
    """Tokens seen (BOS and padding excluded)."""
    tensors: dict[str, Tensor]
    """density, mean_act, max_act [F]; hist [F, bins]; top_* and sample_* examples [F, K(, W)];
    cooc_index / cooc_jaccard [F, M]; logit_top_* / logit_bottom_* [F, L]; neighbour_index / neighbour_cos [F, M]."""
    token_strings: dict[int, str]
    """Display text of every token id that appears in an example or a logit list."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Model and SAE names, hook point, window shape, documents (source, key) per context."""
    labels: dict[int, str] = field(default_factory=dict)
    """Human labels by feature index; `save` writes them, widgets edit them."""
    path: Path | None = None
    """Folder this analysis was saved to or loaded from; `set_label` rewrites its labels there."""

    # -- facts ----------------------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        return int(self.tensors["density"].shape[0])

    def __repr__(self) -> str:
        return (f"FeatureStats(n_features={self.n_features}, n_tokens={self.n_tokens}, "
                f"hookpoint={self.meta.get('hookpoint')!r}, labels={len(self.labels)})")

    def __getattr__(self, name: str) -> Tensor:
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        raise AttributeError(name)

    def _check(self, feature: int) -> int:
        f = int(feature)
        if not 0 <= f < self.n_features:
            raise FeatureError(f"feature {feature} is out of range: this SAE has features 0..{self.n_features - 1}")
        return f

    def token_str(self, token_id: int) -> str:
        return self.token_strings.get(int(token_id), f"<{int(token_id)}>")

    # -- labels ---------------------------------------------------------------------------------

    def set_label(self, feature: int, label: str) -> None:
        """Set (or clear, with '') a feature's label; saved at once when the analysis lives in a folder."""
        f = self._check(feature)
        if label.strip():
            self.labels[f] = label.strip()
        else:
            self.labels.pop(f, None)
        if self.path is not None:
            write_json({str(k): v for k, v in sorted(self.labels.items())}, self.path / LABELS_FILE)

    # -- views ----------------------------------------------------------------------------------

    def examples(self, feature: int, kind: str = "top") -> list[dict[str, Any]]:
        """A feature's 'top' or 'sample' contexts, strongest first: dicts of tokens, acts, max, doc."""
        f = self._check(feature)
        if kind not in ("top", "sample"):
            raise FeatureError(f"kind must be 'top' or 'sample', got {kind!r}")
        vals = self.tensors[f"{kind}_values"][f]
        ids = self.tensors[f"{kind}_tokens"][f]
        acts = self.tensors[f"{kind}_acts"][f]
        ctx = self.tensors[f"{kind}_context"][f]
        docs = self.meta.get("documents") or []
        ctx_doc = self.meta.get("context_doc") or []
        out = []
        for j in torch.argsort(vals, descending=True).tolist():
            if ctx[j] < 0:
                continue
            keep = ids[j] >= 0
            c = int(ctx[j])
            doc = docs[ctx_doc[c]] if c < len(ctx_doc) and ctx_doc[c] < len(docs) else None
            out.append({
                "max": float(vals[j]),
                "tokens": [self.token_str(t) for t in ids[j][keep].tolist()],
                "acts": [round(float(a), 4) for a in acts[j][keep].tolist()],
                "peak": int(keep[: self.meta["window"][0]].sum()),
                "context": c,
                "doc": doc,
            })
        return out

    def quantile_examples(self, feature: int, n_groups: int = 4, per_group: int = 2) -> list[dict[str, Any]]:
        """Reservoir samples grouped by activation quantile, weakest group first: [{'range', 'examples'}]."""
        ex = sorted(self.examples(feature, "sample"), key=lambda e: e["max"])
        if not ex:
            return []
        groups = []
        bounds = [round(i * len(ex) / n_groups) for i in range(n_groups + 1)]
        for g in range(n_groups):
            part = ex[bounds[g] : bounds[g + 1]]
            if not part:
                continue
            lo_q, hi_q = g / n_groups, (g + 1) / n_groups
            pick = [part[round(i * (len(part) - 1) / max(per_group - 1, 1))] for i in range(min(per_group, len(part)))]
            groups.append({
                "quantile": [lo_q, hi_q],
                "range": [part[0]["max"], part[-1]["max"]],
                "examples": list(reversed(_dedupe(pick))),
            })
        return groups

    def histogram(self, feature: int) -> dict[str, list[float]]:
        """Nonzero activation counts of a feature on the shared log2 bins, trimmed to the used range."""
        f = self._check(feature)
        counts = self.tensors["hist"][f]
        nz = counts.nonzero().squeeze(-1)
        edges = HIST_EDGES
        if nz.numel() == 0:
            return {"edges": [], "counts": []}
        a, b = int(nz[0]), int(nz[-1]) + 1
        return {"edges": [float(e) for e in edges[a : b + 1]], "counts": [int(c) for c in counts[a:b]]}

    def logit_tokens(self, feature: int, which: str = "top") -> list[tuple[str, float]]:
        f = self._check(feature)
        if f"logit_{which}_ids" not in self.tensors:
            return []
        ids = self.tensors[f"logit_{which}_ids"][f].tolist()
        vals = self.tensors[f"logit_{which}_values"][f].tolist()
        return [(self.token_str(i), round(v, 4)) for i, v in zip(ids, vals)]

    def neighbours(self, feature: int) -> list[tuple[int, float]]:
        f = self._check(feature)
        if "neighbour_index" not in self.tensors:
            return []
        return [(int(i), round(float(c), 4)) for i, c in zip(self.neighbour_index[f], self.neighbour_cos[f]) if i >= 0]

    def cooccurring(self, feature: int) -> list[tuple[int, float]]:
        f = self._check(feature)
        if "cooc_index" not in self.tensors:
            return []
        return [(int(i), round(float(j), 4)) for i, j in zip(self.cooc_index[f], self.cooc_jaccard[f]) if i >= 0 and j > 0]

    def peak_tokens(self, feature: int, n: int = 5) -> list[str]:
        """The tokens the top contexts peak on, most frequent first (what the feature reads)."""
        f = self._check(feature)
        ids = self.tensors["top_tokens"][f, :, self.meta["window"][0]][self.top_context[f] >= 0]
        uniq, counts = torch.unique(ids, return_counts=True)
        order = torch.argsort(counts, descending=True, stable=True)
        return [self.token_str(int(uniq[i])) for i in order[:n]]

    def view(self, feature: int) -> dict[str, Any]:
        """Everything a dashboard shows about one feature, as JSON-ready plain data."""
        f = self._check(feature)
        return {
            "feature": f,
            "label": self.labels.get(f, ""),
            "density": float(self.density[f]),
            "mean_act": float(self.mean_act[f]),
            "max_act": float(self.max_act[f]),
            "n_tokens": self.n_tokens,
            "histogram": self.histogram(f),
            "logits_top": [list(p) for p in self.logit_tokens(f, "top")],
            "logits_bottom": [list(p) for p in self.logit_tokens(f, "bottom")],
            "top_examples": self.examples(f, "top"),
            "quantiles": self.quantile_examples(f),
            "neighbours": [list(p) for p in self.neighbours(f)],
            "cooccurring": [list(p) for p in self.cooccurring(f)],
        }

    def table(self) -> "pandas.DataFrame":  # noqa: F821
        """One row per feature: density, mean/max activation, top tokens, top logit tokens, label."""
        import pandas as pd

        F = self.n_features
        reads = [" | ".join(self.peak_tokens(f, 3)) for f in range(F)]
        df = pd.DataFrame({
            "feature": range(F),
            "density": self.density.numpy(),
            "mean_act": self.mean_act.numpy(),
            "max_act": self.max_act.numpy(),
            "top_tokens": reads,
        })
        if "logit_top_ids" in self.tensors:
            df["logit_tokens"] = [" | ".join(self.token_str(i) for i in row[:3]) for row in self.logit_top_ids.tolist()]
        df["label"] = [self.labels.get(f, "") for f in range(F)]
        return df.set_index("feature")

    def plot_histogram(self, feature: int, ax=None):
        """Matplotlib bar chart of a feature's nonzero activations (log2 bins); returns the Axes."""
        import matplotlib.pyplot as plt

        h = self.histogram(feature)
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 2.5))
        if h["counts"]:
            edges = h["edges"]
            ax.bar(edges[:-1], h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge")
            ax.set_xscale("log", base=2)
        ax.set_xlabel("activation (log2 bins)")
        ax.set_ylabel("tokens")
        ax.set_title(f"feature {int(feature)}: density {float(self.density[int(feature)]):.2e}")
        return ax

    # -- disk -----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write stats.safetensors, stats.json and labels.json into the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        save_tensors(self.tensors, path / STATS_FILE)
        write_json({
            "format": 1,
            "n_tokens": self.n_tokens,
            "meta": self.meta,
            "token_strings": {str(k): v for k, v in sorted(self.token_strings.items())},
        }, path / META_FILE)
        self.path = path
        write_json({str(k): v for k, v in sorted(self.labels.items())}, path / LABELS_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Read a folder written by `save` (safetensors + JSON; nothing is unpickled)."""
        path = Path(path)
        if not (path / STATS_FILE).exists() or not (path / META_FILE).exists():
            raise FeatureError(
                f"{path} holds no feature statistics: expected {STATS_FILE} and {META_FILE} "
                "(FeatureStats.save writes them; compute them again with feature_stats(...) and save)"
            )
        raw = _read_json(path / META_FILE)
        labels_raw = _read_json(path / LABELS_FILE) if (path / LABELS_FILE).exists() else {}
        try:
            tensors = load_file(str(path / STATS_FILE))
            stats = cls(
                n_tokens=int(raw["n_tokens"]),
                tensors=tensors,
                token_strings={int(k): v for k, v in raw["token_strings"].items()},
                meta=raw["meta"],
                labels={int(k): v for k, v in labels_raw.items()},
                path=path,
            )
        except (SafetensorError, OSError, KeyError, TypeError, ValueError, AttributeError) as e:
            broken = f"{type(e).__name__}: {e}"
        else:
            return stats
        raise FeatureError(
            f"the feature statistics in {path} are damaged ({broken}); compute them again with feature_stats(...) and save"
        )


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        broken = f"{type(e).__name__}: {e}"
    raise FeatureError(f"{file} is not readable JSON ({broken}); compute the statistics again with feature_stats(...) and save")


def _dedupe(examples: list[dict]) -> list[dict]:
    seen, out = set(), []
    for e in examples:
        if id(e) not in seen:
            seen.add(id(e))
            out.append(e)
    return out


# -- the streaming pass ---------------------------------------------------------------------------


@torch.no_grad()
def feature_stats(
    model: Model | None,
    sae,
    texts=None,
    *,
    n_tokens: int = 100_000,
    context_len: int = 64,
    batch_size: int = 16,
    top_k: int = 16,
    n_samples: int = 24,
    window: tuple[int, int] = (12, 4),
    cooccurrence_tokens: int = 65_536,
    n_cooccurring: int = 8,
    n_logits: int = 10,
    n_neighbours: int = 8,
    split: str = "test",
    seed: int = 0,
    progress: bool = True,
) -> FeatureStats:
    """Statistics for every feature of `sae` over about `n_tokens` tokens, in one streaming pass.

    `texts`: None (the built-in corpus, held-out `split`), strings or Documents, `TokenContexts`, or an
    `ActivationCache` harvested at the SAE's hook point (then no forward runs; `model` may be None, and
    logit effects are skipped when it is). `window` = (tokens before, tokens after) the strongest token.
    """
    left, right = window
    if left < 0 or right < 0:
        raise FeatureError(f"window must be two non-negative ints (before, after), got {window!r}")
    if top_k < 1 or n_samples < 0:
        raise FeatureError(f"top_k must be >= 1 and n_samples >= 0, got top_k={top_k}, n_samples={n_samples}")
    hookpoint = sae.cfg.hookpoint
    meta: dict[str, Any] = {
        "hookpoint": hookpoint,
        "sae": {k: v for k, v in sae.cfg.to_dict().items()},
        "window": [left, right],
        "documents": [],
        "context_doc": [],
    }
    batches, total = _activation_source(model, sae, texts, meta, n_tokens=n_tokens, context_len=context_len,
                                        batch_size=batch_size, split=split)
    F = sae.n_latents
    firing = FiringStats(F)
    accumulators = [firing, ActivationHistogram(F), TopContexts(F, top_k, window)]
    if n_samples:
        accumulators.append(ContextSample(F, n_samples, window, seed))
    accumulators.append(CooccurrenceSample(F, cooccurrence_tokens, n_cooccurring))
    bar = tqdm(total=min(total, n_tokens), desc="feature stats", unit="tok", disable=not progress)
    for batch in batches:
        if firing.n_tokens >= n_tokens:
            break
        latents = LatentBatch.encode(sae, batch, hookpoint)
        for acc in accumulators:
            acc.update(latents)
        bar.update(latents.n_tokens)
    bar.close()
    if firing.n_tokens == 0:
        raise FeatureError("the corpus gave no tokens to analyse: pass longer texts or a larger n_tokens")

    tensors: dict[str, Tensor] = {}
    for acc in accumulators:
        tensors.update(acc.result())
    if n_neighbours:
        tensors["neighbour_index"], tensors["neighbour_cos"] = decoder_neighbours(sae, n_neighbours)
    if model is not None and n_logits:
        tensors.update(logit_effects(model, sae, n_logits, progress=progress))
    used = set(torch.unique(torch.cat([t.reshape(-1) for k, t in tensors.items() if k.endswith(("_tokens", "_ids"))])).tolist())
    used.discard(-1)
    tok = getattr(model, "tokenizer", None)
    return FeatureStats(firing.n_tokens, tensors, token_strings(tok, sorted(used)), meta)


def _activation_source(
    model: Model | None, sae, texts, meta: dict[str, Any], *, n_tokens: int, context_len: int, batch_size: int, split: str
) -> tuple[Iterator[ActivationBatch], int]:
    """(batches of activations at the SAE's hook point, tokens available) from a harvest or from the model;
    fills in `meta`'s model and documents."""
    hookpoint = sae.cfg.hookpoint
    if isinstance(texts, ActivationCache):
        if hookpoint not in texts.hookpoints:
            raise FeatureError(
                f"the cache holds {texts.hookpoints} but the SAE reads {hookpoint!r}: harvest at the SAE's hook point"
            )
        meta["model"] = texts.info.get("model")
        return cached_activations(texts, [hookpoint], batch_size=batch_size), texts.n_tokens
    if model is None:
        raise FeatureError("pass a model to run texts through, or pass an ActivationCache as texts")
    if hookpoint is None:
        raise FeatureError("the SAE has no cfg.hookpoint: set sae.cfg.hookpoint to the hook point it was trained on")
    if isinstance(texts, TokenContexts):
        ctx = texts
    else:
        docs = corpus(split=split) if texts is None else as_documents(texts)
        ctx = contexts(model, docs, context_len=context_len, n_tokens=n_tokens)
    meta["model"] = model.name
    meta["documents"] = [[d.source, d.key] for d in ctx.documents]
    meta["context_doc"] = ctx.doc_index.tolist()
    total = int(keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id).sum())
    return stream_activations(model, ctx, [hookpoint], batch_size=batch_size, device=sae.device), total


def token_strings(tokenizer, ids: Sequence[int]) -> dict[int, str]:
    """Display text of each token id: `decode([id])`, which keeps a SentencePiece token's leading space."""
    if tokenizer is None:
        return {int(i): f"<{int(i)}>" for i in ids}
    return {int(i): tokenizer.decode([int(i)]) for i in ids}


__all__ = ["FeatureError", "FeatureStats", "HIST_EDGES", "feature_stats", "token_strings"]
