"""Per-feature statistics over a corpus, as plain data: `feature_stats(model, sae, texts) -> FeatureStats`.

One pass over the activation stream (`saekit.stream`) feeds one accumulator per statistic
(`saekit.features.accumulators`), which collect for every SAE latent ("feature"):

- density (fraction of tokens where it fires, act > 0), mean activation when firing, max activation;
- top-activating contexts: per context the feature's strongest token, the `top_k` strongest contexts
  kept by a streaming top-k, each stored as a window of tokens around that token with every token's
  activation (Bricken et al. 2023, "Towards Monosemanticity", show contexts the same way); no two
  identical windows, and at most `per_document` contexts from one source document, so the list shows
  the feature across many documents; each example names its document when it is known;
- quantile samples: a uniform reservoir of contexts where the feature fires (a streaming top-k on random
  keys), sorted by activation so `quantile_examples` can show weak, typical and strong firings (never
  repeating an example of the top list);
- an activation histogram on fixed log2-spaced bins (exact counts, no second pass);
- co-occurring features: Jaccard similarity of firing sets, counted on the first `cooccurrence_tokens`
  tokens (sparse, so memory grows with tokens x L0, never with features squared);
- logit effects (top and bottom output tokens of each decoder direction through the model's final norm
  and unembedding, see `saekit.features.unembed`) and nearest features by decoder cosine similarity
  (`saekit.features.geometry`), which need no corpus pass.

Reading the results: `FeatureStats.score()` is a per-feature interpretability score computed from the
top contexts (how consistently they peak on one token, from how many documents), `is_dense()` flags
latents that fire on more than `DENSE_DENSITY` of tokens, and `order()` / `table()` rank features by the
score with dense and never-firing features last; the widgets show that order by default.

Memory is bounded by features x (top_k + n_samples) x window, about 100 MB for 16k features with the
defaults; nothing grows with the corpus except the co-occurrence sample, which is capped. Results save to
a folder (`stats.safetensors` + `stats.json` + `labels.json`, no pickles) and `FeatureStats.load` reads it.
On disk the windows are compact (format 2): activations as float16 (the statistics keep windows at float16
precision, so a save/load round trip is exact; the peak values stay float32), token ids as int16 indices
into the table of tokens used (int32 when more than 32,767 distinct tokens appear), context and feature
indices as int32. Folders written before (format 1: float32 windows, int64 indices) still load.
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

from ..data import Document, TokenContexts, as_documents, contexts, corpus
from ..durable import remove_stale_temporaries, save_tensors, write_json
from ..errors import FeatureError
from ..store import ActivationCache
from ..stream import ActivationBatch, cached_activations, stream_activations
from ..tokens import keep_mask
from .accumulators import (
    HIST_EDGES,
    PER_DOCUMENT,
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
FORMAT = 2
"""stats.json's format: 1 stored float32 windows and int64 indices; 2 stores them compact (module docstring)."""

DENSE_DENSITY = 0.1
"""Firing density (fraction of tokens where a latent is > 0) above which a latent counts as *dense*.

Latents that fire on more than a tenth of all tokens are rarely explained by their top contexts: they
track position, the context's start, or other broad directions rather than one concept (Sun et al. 2025,
"Dense SAE Latents Are Features, Not Bugs", study them as such). `FeatureStats.is_dense` flags them and
`FeatureStats.order` puts them after every sparse latent."""

SORT_KEYS = ("score", "feature", "density", "mean_act", "max_act")
"""What `FeatureStats.order` and `FeatureStats.table` sort by."""

_VOCAB_KEY = "token_vocab"
"""On disk (format 2): the token ids that int16 window entries index."""
_F16_MAX = 65504.0


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

    def _doc(self, context: int) -> list[str] | None:
        """[source, key] of the document a source context came from, None when unknown."""
        docs = self.meta.get("documents") or []
        ctx_doc = self.meta.get("context_doc") or []
        if 0 <= context < len(ctx_doc) and 0 <= ctx_doc[context] < len(docs):
            return list(docs[ctx_doc[context]])
        return None

    def examples(self, feature: int, kind: str = "top") -> list[dict[str, Any]]:
        """A feature's 'top' or 'sample' contexts, strongest first: dicts of tokens, acts, max, peak (index of
        the strongest token), context (index in the source) and doc ([source, key], None when unknown).
        A window identical to a stronger one is shown once (statistics saved before de-duplication may
        hold repeats)."""
        f = self._check(feature)
        if kind not in ("top", "sample"):
            raise FeatureError(f"kind must be 'top' or 'sample', got {kind!r}")
        vals = self.tensors[f"{kind}_values"][f]
        ids = self.tensors[f"{kind}_tokens"][f]
        acts = self.tensors[f"{kind}_acts"][f]
        ctx = self.tensors[f"{kind}_context"][f]
        out, seen = [], set()
        for j in torch.argsort(vals, descending=True, stable=True).tolist():
            if ctx[j] < 0:
                continue
            window = tuple(ids[j].tolist())
            if window in seen:
                continue
            seen.add(window)
            keep = ids[j] >= 0
            c = int(ctx[j])
            out.append({
                "max": float(vals[j]),
                "tokens": [self.token_str(t) for t in ids[j][keep].tolist()],
                "acts": [round(float(a), 4) for a in acts[j][keep].tolist()],
                "peak": int(keep[: self.meta["window"][0]].sum()),
                "context": c,
                "doc": self._doc(c),
            })
        return out

    def quantile_examples(self, feature: int, n_groups: int = 4, per_group: int = 2) -> list[dict[str, Any]]:
        """Reservoir samples grouped by activation quantile, weakest group first: [{'quantile', 'range',
        'examples'}]. Samples that are also top examples (same context, or the same window) are left out,
        so the groups never repeat the top list."""
        if n_groups < 1 or per_group < 1:
            raise FeatureError(f"n_groups and per_group must be >= 1, got n_groups={n_groups}, per_group={per_group}")
        top = self.examples(feature, "top")
        top_ctx = {e["context"] for e in top}
        top_windows = {(tuple(e["tokens"]), e["peak"]) for e in top}
        ex = [e for e in self.examples(feature, "sample")
              if e["context"] not in top_ctx and (tuple(e["tokens"]), e["peak"]) not in top_windows]
        ex.sort(key=lambda e: e["max"])
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

    # -- what to trust -------------------------------------------------------------------------

    def is_dense(self, threshold: float = DENSE_DENSITY) -> Tensor:
        """[F] bool: the features that fire on more than `threshold` of tokens (`DENSE_DENSITY`, 10%)."""
        t = _check_threshold(threshold)
        return self.density > t

    def score_terms(self) -> dict[str, Tensor]:
        """The parts of `score`, each [F]: n_examples (top contexts kept), peak_share, n_documents,
        doc_share, fill (see `score`)."""
        key = (id(self.tensors.get("top_context")), id(self.tensors.get("top_tokens")), len(self.token_strings))
        cached = self.__dict__.get("_score_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        terms = self._score_terms()
        self.__dict__["_score_cache"] = (key, terms)
        return terms

    def _score_terms(self) -> dict[str, Tensor]:
        left = self.meta["window"][0]
        ctx = self.tensors["top_context"].long()  # [F, K]
        F, K = ctx.shape
        valid = ctx >= 0
        peak = self.tensors["top_tokens"][:, :, left].long()
        tok_ok = valid & (peak >= 0)
        group = torch.zeros_like(peak)
        used = torch.unique(peak[tok_ok])
        if len(used):
            names: dict[str, int] = {}
            gid = torch.tensor([names.setdefault(_token_key(self.token_str(t)), len(names)) for t in used.tolist()])
            group[tok_ok] = gid[torch.searchsorted(used, peak[tok_ok])]
        ctx_doc = torch.tensor(self.meta.get("context_doc") or [], dtype=torch.long)
        doc = -2 - ctx  # unknown: every context its own document
        if len(ctx_doc):
            known = valid & (ctx < len(ctx_doc))
            doc = torch.where(known, ctx_doc[ctx.clamp(0, len(ctx_doc) - 1)], doc)
        n = valid.sum(1)
        mode, _ = _group_sizes(group, tok_ok)
        _, n_docs = _group_sizes(doc, valid)
        nf = n.clamp_min(1).float()
        return {
            "n_examples": n,
            "peak_share": torch.where(n > 0, mode / nf, 0.0),
            "n_documents": n_docs,
            "doc_share": torch.where(n > 0, n_docs / nf, 0.0),
            "fill": n.float() / max(K, 1),
        }

    def score(self) -> Tensor:
        """[F] interpretability score in [0, 1], computed from the top contexts alone:

            score = peak_share x doc_share x fill

        - peak_share: the share of the n top contexts that peak (strongest token) on the most common peak
          token, tokens compared ignoring case and surrounding spaces (" Sea" counts as "sea"): 1 when all
          n peak on one token, 1/n when no two do.
        - doc_share: distinct source documents among the n top contexts, / n (1 when the documents are
          unknown: each context then counts as its own document).
        - fill: n / top_k, the share of the top list that the feature filled (a feature seen in 3
          distinct contexts is less established than one seen in 16).

        A feature that never fired scores 0. The score says how consistent and how broadly attested the
        top contexts are, not whether the feature is dense: `order` puts dense features last whatever
        their score.
        """
        t = self.score_terms()
        return t["peak_share"] * t["doc_share"] * t["fill"]

    def order(self, by: str = "score", *, descending: bool = True, threshold: float = DENSE_DENSITY) -> list[int]:
        """Feature indices in display order.

        `by="score"` (the default order of tables and the browser): features that fire and are not dense,
        by `score` (ties: higher max activation, then lower index), then dense features (`is_dense(threshold)`)
        the same way, then features that never fired; `descending=False` reverses the whole list.
        Any other key of `SORT_KEYS` is a plain sort by that column (ties: lower index first).
        """
        import numpy as np

        if by not in SORT_KEYS:
            raise FeatureError(f"unknown sort key {by!r}: sort by one of {', '.join(map(repr, SORT_KEYS))}")
        threshold = _check_threshold(threshold)
        F = self.n_features
        idx = np.arange(F)
        if by == "feature":
            o = idx
            return (o[::-1] if descending else o).tolist()
        if by == "score":
            dead = (self.density == 0).numpy()
            dense = self.is_dense(threshold).numpy() & ~dead
            group = dense.astype(np.int64) + 2 * dead.astype(np.int64)
            o = np.lexsort((idx, -self.max_act.double().numpy(), -self.score().double().numpy(), group))
            return (o if descending else o[::-1]).tolist()
        v = self.tensors[by].double().numpy()
        return np.lexsort((idx, -v if descending else v)).tolist()

    def view(self, feature: int) -> dict[str, Any]:
        """Everything a dashboard shows about one feature, as JSON-ready plain data."""
        f = self._check(feature)
        terms = self.score_terms()
        return {
            "feature": f,
            "label": self.labels.get(f, ""),
            "density": float(self.density[f]),
            "mean_act": float(self.mean_act[f]),
            "max_act": float(self.max_act[f]),
            "n_tokens": self.n_tokens,
            "dense": bool(self.density[f] > DENSE_DENSITY),
            "dense_threshold": DENSE_DENSITY,
            "score": round(float(terms["peak_share"][f] * terms["doc_share"][f] * terms["fill"][f]), 4),
            "score_terms": {k: round(float(v[f]), 4) if v.is_floating_point() else int(v[f]) for k, v in terms.items()},
            "hookpoint": self.meta.get("hookpoint"),
            "histogram": self.histogram(f),
            "logits_top": [list(p) for p in self.logit_tokens(f, "top")],
            "logits_bottom": [list(p) for p in self.logit_tokens(f, "bottom")],
            "top_examples": self.examples(f, "top"),
            "quantiles": self.quantile_examples(f),
            "neighbours": [list(p) for p in self.neighbours(f)],
            "cooccurring": [list(p) for p in self.cooccurring(f)],
        }

    def table(self, sort_by: str = "score") -> "pandas.DataFrame":  # noqa: F821
        """One row per feature: density, mean/max activation, score, dense flag, top tokens, top logit
        tokens, label; rows in `order(sort_by)` (the default: by score, dense and dead features last;
        'feature' keeps index order)."""
        import pandas as pd

        rows = self.order(sort_by, descending=sort_by != "feature")
        F = self.n_features
        reads = [" | ".join(self.peak_tokens(f, 3)) for f in range(F)]
        df = pd.DataFrame({
            "feature": range(F),
            "density": self.density.numpy(),
            "mean_act": self.mean_act.numpy(),
            "max_act": self.max_act.numpy(),
            "score": self.score().numpy(),
            "dense": self.is_dense().numpy(),
            "top_tokens": reads,
        })
        if "logit_top_ids" in self.tensors:
            df["logit_tokens"] = [" | ".join(self.token_str(i) for i in row[:3]) for row in self.logit_top_ids.tolist()]
        df["label"] = [self.labels.get(f, "") for f in range(F)]
        return df.set_index("feature").loc[rows]

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
        """Write stats.safetensors, stats.json and labels.json into the folder `path` (compact, format 2:
        see the module docstring; activation windows go to float16)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        save_tensors(_encode(self.tensors), path / STATS_FILE)
        write_json({
            "format": FORMAT,
            "n_tokens": self.n_tokens,
            "meta": self.meta,
            "token_strings": {str(k): v for k, v in sorted(self.token_strings.items())},
        }, path / META_FILE)
        self.path = path
        write_json({str(k): v for k, v in sorted(self.labels.items())}, path / LABELS_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Read a folder written by `save`, in either format (safetensors + JSON; nothing is unpickled)."""
        path = Path(path)
        if not (path / STATS_FILE).exists() or not (path / META_FILE).exists():
            raise FeatureError(
                f"{path} holds no feature statistics: expected {STATS_FILE} and {META_FILE} "
                "(FeatureStats.save writes them; compute them again with feature_stats(...) and save)"
            )
        raw = _read_json(path / META_FILE)
        labels_raw = _read_json(path / LABELS_FILE) if (path / LABELS_FILE).exists() else {}
        try:
            tensors = _decode(load_file(str(path / STATS_FILE)))
            stats = cls(
                n_tokens=int(raw["n_tokens"]),
                tensors=tensors,
                token_strings={int(k): v for k, v in raw["token_strings"].items()},
                meta=raw["meta"],
                labels={int(k): v for k, v in labels_raw.items()},
                path=path,
            )
        except (SafetensorError, OSError, KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            broken = f"{type(e).__name__}: {e}"
        else:
            return stats
        raise FeatureError(
            f"the feature statistics in {path} are damaged ({broken}); compute them again with feature_stats(...) and save"
        )


_INDEX_KEYS = ("top_context", "sample_context", "cooc_index", "neighbour_index")


def _window_acts(t: Tensor) -> Tensor:
    """Activation windows at float16 precision (clamped to float16's range), kept as float32."""
    return t.float().clamp(-_F16_MAX, _F16_MAX).half().float()


def _encode(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors as stored on disk (format 2): windows' activations float16, their token ids int16
    indices into `token_vocab` when it fits (else int32), index tensors int32; everything else as is."""
    out = dict(tensors)
    for k, t in tensors.items():
        if k.endswith("_acts"):
            out[k] = t.float().clamp(-_F16_MAX, _F16_MAX).half()
        elif k in _INDEX_KEYS:
            out[k] = t.to(torch.int32)
    token_keys = [k for k in tensors if k.endswith("_tokens")]
    if token_keys:
        vocab = torch.unique(torch.cat([tensors[k].reshape(-1).long() for k in token_keys]))
        vocab = vocab[vocab >= 0]
        if len(vocab) <= torch.iinfo(torch.int16).max:
            for k in token_keys:
                t = tensors[k].long()
                local = torch.searchsorted(vocab, t.clamp_min(0))
                out[k] = torch.where(t >= 0, local, -1).to(torch.int16)
            out[_VOCAB_KEY] = vocab.to(torch.int32)
        else:
            for k in token_keys:
                out[k] = tensors[k].to(torch.int32)
    return out


def _decode(stored: dict[str, Tensor]) -> dict[str, Tensor]:
    """`_encode` undone; format-1 tensors (float32 windows, int64 indices, int32 tokens) pass unchanged."""
    out = dict(stored)
    vocab = out.pop(_VOCAB_KEY, None)
    for k, t in stored.items():
        if k.endswith("_acts") and t.dtype != torch.float32:
            out[k] = t.float()
        elif k in _INDEX_KEYS and t.dtype != torch.long:
            out[k] = t.long()
        elif k.endswith("_tokens") and t.dtype == torch.int16:
            if vocab is None:
                raise FeatureError(f"{k} holds int16 token indices but the file has no {_VOCAB_KEY}")
            ids = vocab.long()[t.long().clamp_min(0)]
            out[k] = torch.where(t >= 0, ids, -1).to(torch.int32)
    return out


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise FeatureError(
            f"the density threshold must be a number in [0, 1] (a fraction of tokens; the default "
            f"DENSE_DENSITY is {DENSE_DENSITY}), got {threshold!r}"
        )
    return float(threshold)


def _token_key(s: str) -> str:
    """How peak tokens are compared for the score: ignoring case and surrounding spaces."""
    return s.strip().casefold() or s


def _group_sizes(values_FK: Tensor, valid_FK: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, among the valid entries: the size of the largest group of equal values, and the number of
    distinct values."""
    s, i = values_FK.sort(dim=1)
    v = valid_FK.gather(1, i).long()
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    run = new.long().cumsum(1) - 1
    counts = torch.zeros_like(v).scatter_add_(1, run, v)
    return counts.max(1).values, (counts > 0).sum(1)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        broken = f"{type(e).__name__}: {e}"
    raise FeatureError(f"{file} is not readable JSON ({broken}); compute the statistics again with feature_stats(...) and save")


def _dedupe(examples: list[dict]) -> list[dict]:
    """Examples in order, each one once (a quantile group may pick the same example twice)."""
    seen, out = set(), []
    for e in examples:
        key = (e["context"], tuple(e["tokens"]), e["peak"])
        if key not in seen:
            seen.add(key)
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
    per_document: int = PER_DOCUMENT,
    documents=None,
    split: str = "test",
    seed: int = 0,
    progress: bool = True,
) -> FeatureStats:
    """Statistics for every feature of `sae` over about `n_tokens` tokens, in one streaming pass.

    `texts`: None (the built-in corpus, held-out `split`), strings or Documents, `TokenContexts`, or an
    `ActivationCache` harvested at the SAE's hook point (then no forward runs; `model` may be None, and
    logit effects are skipped when it is). `window` = (tokens before, tokens after) the strongest token.

    Top and sampled contexts hold no identical windows and at most `per_document` contexts of one source
    document. Texts carry their documents; an `ActivationCache` does not, so pass `documents=` the
    `TokenContexts` it was harvested from (or a pair `(documents, context_doc)`: the documents, as
    `Document`s or (source, key) pairs, and the document index of each cached context) to name each
    example's source and cap it per document; without it examples have no source (`doc` None) and each
    context counts as its own document.
    """
    left, right = window
    if left < 0 or right < 0:
        raise FeatureError(f"window must be two non-negative ints (before, after), got {window!r}")
    if top_k < 1 or n_samples < 0:
        raise FeatureError(f"top_k must be >= 1 and n_samples >= 0, got top_k={top_k}, n_samples={n_samples}")
    if isinstance(per_document, bool) or not isinstance(per_document, int) or per_document < 1:
        raise FeatureError(
            f"per_document must be an int >= 1 (contexts kept per source document; default {PER_DOCUMENT}), got {per_document!r}"
        )
    hookpoint = sae.cfg.hookpoint
    meta: dict[str, Any] = {
        "hookpoint": hookpoint,
        "sae": {k: v for k, v in sae.cfg.to_dict().items()},
        "window": [left, right],
        "per_document": per_document,
        "documents": [],
        "context_doc": [],
    }
    if documents is not None:
        if not isinstance(texts, ActivationCache):
            raise FeatureError(
                "documents= names the documents of an ActivationCache's contexts; texts, Documents and "
                "TokenContexts carry their own documents: leave documents out"
            )
        meta["documents"], meta["context_doc"] = _document_map(documents)
    batches, total = _activation_source(model, sae, texts, meta, n_tokens=n_tokens, context_len=context_len,
                                        batch_size=batch_size, split=split)
    F = sae.n_latents
    firing = FiringStats(F)
    ctx_doc = torch.tensor(meta["context_doc"], dtype=torch.long) if meta["context_doc"] else None
    dedupe = {"context_doc": ctx_doc, "per_document": per_document}
    accumulators = [firing, ActivationHistogram(F), TopContexts(F, top_k, window, **dedupe)]
    if n_samples:
        accumulators.append(ContextSample(F, n_samples, window, seed, **dedupe))
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
    for k in [k for k in tensors if k.endswith("_acts")]:
        tensors[k] = _window_acts(tensors[k])  # the precision they are saved with
    if n_neighbours:
        tensors["neighbour_index"], tensors["neighbour_cos"] = decoder_neighbours(sae, n_neighbours)
    if model is not None and n_logits:
        tensors.update(logit_effects(model, sae, n_logits, progress=progress))
    used = set(torch.unique(torch.cat([t.reshape(-1) for k, t in tensors.items() if k.endswith(("_tokens", "_ids"))])).tolist())
    used.discard(-1)
    tok = getattr(model, "tokenizer", None)
    return FeatureStats(firing.n_tokens, tensors, token_strings(tok, sorted(used)), meta)


def _document_map(documents) -> tuple[list[list[str]], list[int]]:
    """(documents as [source, key] pairs, document index per context) from `feature_stats(documents=...)`."""
    if isinstance(documents, TokenContexts):
        return [[d.source, d.key] for d in documents.documents], [int(i) for i in documents.doc_index.tolist()]
    try:
        docs, ctx_doc = documents
        pairs = [[d.source, d.key] if isinstance(d, Document) else [str(d[0]), str(d[1])] for d in docs]
        index = [int(i) for i in (ctx_doc.tolist() if isinstance(ctx_doc, Tensor) else ctx_doc)]
    except (TypeError, ValueError, IndexError) as e:
        raise FeatureError(
            "documents= takes the TokenContexts the cache was harvested from, or a pair (documents, context_doc): "
            f"Documents or (source, key) pairs, and one document index per cached context ({type(e).__name__}: {e})"
        ) from None
    bad = [i for i in index if not 0 <= i < len(pairs)]
    if bad:
        raise FeatureError(
            f"documents=: context_doc holds {bad[0]}, but there are {len(pairs)} documents: "
            "give each cached context the index of its document in that list"
        )
    return pairs, index


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


__all__ = [
    "DENSE_DENSITY",
    "FeatureError",
    "FeatureStats",
    "HIST_EDGES",
    "PER_DOCUMENT",
    "SORT_KEYS",
    "feature_stats",
    "token_strings",
]
