"""Finding features: what fires on a prompt, on given tokens, and on the same concept across languages.

- `prompt_activations(model, sae, text)`: each token's active features and values (the prompt view).
- `features_for_text(model, sae, text, stats)`: features ranked by how *specific* they are to a text
  (below), so that dense, generic features ("The", "(") do not crowd the list.
- `features_for_tokens(stats, tokens)`: features whose top contexts peak on the given tokens.
- `parallel_articles()` + `multilingual_features(model, sae, articles)`: the built-in corpus holds
  English, Spanish and French Wikipedia leads of the same vital articles. The Spanish and French files
  are keyed by the title linked from their vital-article lists, which for ~1,400 (es) and ~2,500 (fr)
  articles is the English title, and otherwise by a local title; each entry's `title` field is the
  resolved article title. An article is matched when its key or title equals an English key (the
  `titles_*.json` files only map titles to topics, so they do not help). A feature "fires on the same
  concept across languages" when its per-article activation profile correlates across languages;
  `MultilingualFeatures.table` ranks those by specificity.

Specificity (a lift): how much more a feature is active on the query than on an average corpus token,

    specificity_f = q_f / c_f,   q_f = (sum of z_f over the query's n tokens) / n,
                                 c_f = (N * mean_f + n * q_f) / (N + n)

where mean_f is the feature's mean activation per corpus token (zeros included: `density * mean_act` of
`FeatureStats`, or `corpus_baseline` on a held-out sample) over N tokens. The query is pooled into the
corpus mean, which plays the part of the "+ eps" in q / (mean + eps) without a free constant: a feature
that fires on the query as much as anywhere scores about 1, one that never fired in the corpus scores
at most (N + n) / n, and one that is silent on the query scores 0. A generic feature that fires on a
third of all tokens cannot score above 3; a feature for one word that fires on 1 token in 10,000 scores
in the hundreds when the query contains that word.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import WIKI_FILES, Document, contexts, corpus, wiki_articles
from ..errors import FeatureError
from ..stream import stream_activations
from .accumulators import LatentBatch
from .stats import DENSE_DENSITY, FeatureStats, token_strings

if TYPE_CHECKING:
    from ..lm import Model

LANGUAGES = ("wiki_en", "wiki_es", "wiki_fr")


# -- one prompt -----------------------------------------------------------------------------------


@dataclass
class PromptActivations:
    """Each token of a prompt with its active features, strongest first (BOS left out)."""

    text: str
    tokens: list[str]
    """Display text of each token."""
    token_ids: list[int]
    features: list[list[int]]
    """Per token, the indices of its active features (at most `max_features`), strongest first."""
    values: list[list[float]]
    """Per token, the matching activations."""

    def column(self, feature: int) -> list[float]:
        """Activation of one feature at every token (0 where it is not among the token's active features)."""
        return [dict(zip(fs, vs)).get(int(feature), 0.0) for fs, vs in zip(self.features, self.values)]

    def top(self, token: int, n: int = 10) -> list[tuple[int, float]]:
        return list(zip(self.features[token][:n], self.values[token][:n]))

    def table(self, n: int = 5) -> "pandas.DataFrame":  # noqa: F821
        """One row per token: the token and its `n` strongest features as 'feature (value)'."""
        import pandas as pd

        return pd.DataFrame({
            "token": self.tokens,
            "features": [", ".join(f"{f} ({v:.3g})" for f, v in self.top(t, n)) for t in range(len(self.tokens))],
        })

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "token_ids": self.token_ids,
                "features": self.features, "values": self.values}


def _prompt_batch(model: Model, texts: Sequence[str], max_tokens: int) -> tuple[Tensor, Tensor]:
    """Input ids and attention mask [B, T] of `texts`, one row each: the separator, then up to
    `max_tokens - 1` tokens, padded on the right to the longest."""
    tok = model.tokenizer
    sep = model.separator_id
    enc = [tok(t, add_special_tokens=False)["input_ids"][: max_tokens - 1] for t in texts]
    T = max(len(e) for e in enc) + 1
    ids = torch.full((len(enc), T), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), T), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e) + 1] = torch.tensor([sep, *e])
        mask[i, : len(e) + 1] = 1
    return ids, mask


def _latents(model: Model, sae, texts: Sequence[str], max_tokens: int) -> LatentBatch:
    """The SAE's latents on `texts` (one forward): grid [B, T, F], 0 at the separator and padding."""
    hp = sae.cfg.hookpoint
    if hp is None:
        raise FeatureError("the SAE has no cfg.hookpoint: set sae.cfg.hookpoint to the hook point it was trained on")
    ids, mask = _prompt_batch(model, texts, max_tokens)
    (batch,) = stream_activations(model, (ids, mask), [hp], batch_size=len(ids), device=sae.device)
    return LatentBatch.encode(sae, batch, hp)


def prompt_activations(model: Model, sae, text: str, *, max_features: int = 32, max_tokens: int = 512) -> PromptActivations:
    """Run `text` through the model and SAE; keep each token's `max_features` strongest features."""
    if not isinstance(text, str) or not text.strip():
        raise FeatureError("pass a non-empty string of text to inspect")
    lat = _latents(model, sae, [text], max_tokens)
    z_TF, ids_T = lat.z[0][lat.keep[0]], lat.token_ids[0][lat.keep[0]]
    k = min(max_features, z_TF.shape[-1])
    v, i = z_TF.topk(k, dim=-1)
    feats, vals = [], []
    for vv, ii in zip(v.tolist(), i.tolist()):
        n = sum(1 for x in vv if x > 0)
        feats.append(ii[:n])
        vals.append([round(x, 4) for x in vv[:n]])
    strings = token_strings(model.tokenizer, ids_T.tolist())
    return PromptActivations(text, [strings[t] for t in ids_T.tolist()], ids_T.tolist(), feats, vals)


# -- search ---------------------------------------------------------------------------------------


def specificity(query_sum_F: Tensor, query_n: int | Tensor, corpus_mean_F: Tensor, corpus_n: int) -> Tensor:
    """The specificity (lift) of each feature on a query (module docstring): `query_sum_F` is the sum of
    each feature's activations over the query's `query_n` tokens, `corpus_mean_F` its mean activation per
    token over `corpus_n` corpus tokens. Broadcasts, so queries may be stacked in front ([..., F])."""
    n = torch.as_tensor(query_n, dtype=torch.float64)
    q_sum = query_sum_F.double()
    q = q_sum / n.clamp_min(1)
    pooled = (corpus_mean_F.double() * corpus_n + q_sum) / (corpus_n + n)
    return torch.where(q_sum > 0, q / pooled.clamp_min(1e-300), torch.zeros_like(q)).float()


def corpus_baseline(model: Model, sae, texts=None, *, n_tokens: int = 4096, context_len: int = 64,
                    batch_size: int = 16, split: str = "test") -> tuple[Tensor, int]:
    """(mean activation per token [F], tokens seen): each feature's baseline on a small held-out sample,
    for `specificity` when no `FeatureStats` are at hand. `texts` None is the built-in corpus' `split`."""
    mean, _, seen = _corpus_means(model, sae, texts, n_tokens=n_tokens, context_len=context_len,
                                  batch_size=batch_size, split=split)
    return mean, seen


@torch.no_grad()
def _corpus_means(model: Model, sae, texts=None, *, n_tokens: int = 4096, context_len: int = 64,
                  batch_size: int = 16, split: str = "test") -> tuple[Tensor, Tensor, int]:
    """(mean activation per token [F], share of tokens where each feature fires [F], tokens seen)."""
    if n_tokens < 1:
        raise FeatureError(f"n_tokens must be >= 1 for a corpus baseline, got {n_tokens}")
    hp = sae.cfg.hookpoint
    if hp is None:
        raise FeatureError("the SAE has no cfg.hookpoint: set sae.cfg.hookpoint to the hook point it was trained on")
    docs = corpus(split=split) if texts is None else ([texts] if isinstance(texts, str) else texts)
    ctx = contexts(model, docs, context_len=context_len, n_tokens=n_tokens)
    total = torch.zeros(sae.n_latents, dtype=torch.float64)
    fired = torch.zeros(sae.n_latents, dtype=torch.float64)
    seen = 0
    for batch in stream_activations(model, ctx, [hp], batch_size=batch_size, device=sae.device):
        lat = LatentBatch.encode(sae, batch, hp)
        total += lat.z.sum((0, 1), dtype=torch.float64)
        fired += (lat.z[lat.keep] > 0).sum(0, dtype=torch.float64)
        seen += lat.n_tokens
    if seen == 0:
        raise FeatureError("the baseline texts gave no tokens: pass longer texts or a FeatureStats as stats=")
    return (total / seen).float(), (fired / seen).float(), seen


TEXT_RANKS = ("specificity", "coverage", "max")
"""How `features_for_text` ranks: by specificity (default), by coverage contrast (the share of the text's
tokens where the feature fires minus its density in the corpus), or by the old score (max on the text, /
the corpus max when stats are given)."""


def features_for_text(model: Model, sae, text: str | Sequence[str], stats: FeatureStats | None = None, *,
                      top: int = 20, rank: str = "specificity", baseline_tokens: int = 4096):
    """Features most specific to `text` (a string or a list of them), as a DataFrame indexed by feature:
    score (what the rows are ranked by), specificity, max_on_text, mean_on_text, corpus_mean, and with
    `stats` density, dense, top_tokens and label.

    `rank="specificity"` (default): mean activation on the text's tokens over the feature's mean
    activation per corpus token (the module docstring's formula). The corpus mean comes from `stats`
    (density x mean_act over its `n_tokens`); without stats it is measured on `baseline_tokens` tokens of
    the built-in corpus' held-out split (`corpus_baseline`; one extra pass of a few seconds).
    `rank="coverage"`: the share of the text's tokens where the feature fires minus the share of corpus
    tokens where it fires (its density, from `stats`, else from the same baseline pass). Specificity
    rewards one strong firing of a rare feature; coverage favours a feature that fires across a concept's
    text (a topic or language feature: the ones that steer, see notebook 05). Dense features (density
    above `DENSE_DENSITY`) are left out of this ranking.
    `rank="max"`: the old ranking, max on the text / the feature's corpus max with `stats`, the raw max
    without (no baseline pass). Only features that fire on the text are listed.
    """
    import pandas as pd

    if rank not in TEXT_RANKS:
        raise FeatureError(f"unknown rank {rank!r}: rank by one of {', '.join(map(repr, TEXT_RANKS))}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise FeatureError(f"top must be an int >= 1 (how many features to list), got {top!r}")
    texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise FeatureError("pass a non-empty string (or a list of them) to search features for")
    lat = _latents(model, sae, texts, 512)
    zk = lat.z[lat.keep]  # [n, F]
    mx, mean, cover = zk.amax(0), zk.mean(0), (zk > 0).float().mean(0)
    density = None
    if stats is not None:
        base, base_n = stats.density * stats.mean_act, stats.n_tokens
        density = stats.density
    elif rank in ("specificity", "coverage"):
        base, density, base_n = _corpus_means(model, sae, n_tokens=baseline_tokens)
    else:
        base, base_n = None, 0
    spec = specificity(zk.sum(0, dtype=torch.float64), zk.shape[0], base, base_n) if base is not None else None
    if rank == "specificity":
        score = spec
    elif rank == "coverage":
        score = (cover - density).clamp_min(0)
        score = torch.where(density > DENSE_DENSITY, torch.zeros_like(score), score)
    else:
        score = mx / stats.max_act.clamp_min(1e-6) if stats is not None else mx
    score = torch.where(mx > 0, score, torch.zeros_like(score))
    order = torch.argsort(score, descending=True, stable=True)[:top]
    order = order[score[order] > 0]
    df = pd.DataFrame({
        "feature": order.tolist(),
        "score": score[order].numpy(),
        "max_on_text": mx[order].numpy(),
        "mean_on_text": mean[order].numpy(),
        "coverage": cover[order].numpy(),
    })
    if spec is not None:
        df.insert(2, "specificity", spec[order].numpy())
        df["corpus_mean"] = base[order].numpy()
    if stats is not None:
        df["density"] = stats.density[order].numpy()
        df["dense"] = stats.is_dense()[order].numpy()
        df["top_tokens"] = [" | ".join(stats.peak_tokens(f, 3)) for f in order.tolist()]
        df["label"] = [stats.labels.get(f, "") for f in order.tolist()]
    return df.set_index("feature")


def features_for_tokens(stats: FeatureStats, tokens: str | Sequence[str], *, top: int = 20):
    """Features whose top and sampled contexts peak on any of `tokens` (matched ignoring case and
    surrounding spaces), ranked by how many of their contexts do, then by mean activation there."""
    import pandas as pd

    wanted = {t.strip().lower() for t in ([tokens] if isinstance(tokens, str) else tokens)}
    if not wanted or wanted == {""}:
        raise FeatureError("pass at least one non-empty token string, e.g. features_for_tokens(stats, ['Paris'])")
    ids = [i for i, s in stats.token_strings.items() if s.strip().lower() in wanted]
    if not ids:
        return pd.DataFrame(columns=["feature", "hits", "mean_act", "density", "label"]).set_index("feature")
    ids_t = torch.tensor(ids, dtype=torch.int32)
    left = stats.meta["window"][0]
    hits = torch.zeros(stats.n_features)
    acts = torch.zeros(stats.n_features)
    for kind in ("top", "sample"):
        if f"{kind}_tokens" not in stats.tensors:
            continue
        at_peak = stats.tensors[f"{kind}_tokens"][:, :, left]  # [F, K]
        m = torch.isin(at_peak, ids_t) & (stats.tensors[f"{kind}_context"] >= 0)
        hits += m.sum(1)
        acts += (stats.tensors[f"{kind}_values"] * m).sum(1)
    mean = acts / hits.clamp_min(1)
    order = sorted((f for f in range(stats.n_features) if hits[f] > 0), key=lambda f: (-hits[f].item(), -mean[f].item()))[:top]
    return pd.DataFrame({
        "feature": order,
        "hits": [int(hits[f]) for f in order],
        "mean_act": [float(mean[f]) for f in order],
        "density": [float(stats.density[f]) for f in order],
        "label": [stats.labels.get(f, "") for f in order],
    }).set_index("feature")


# -- across languages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParallelArticle:
    """One vital article's lead section in several languages."""

    key: str
    """The English title."""
    docs: dict[str, Document]
    """Document per source name ('wiki_en', 'wiki_es', 'wiki_fr')."""


def parallel_articles(languages: Sequence[str] = LANGUAGES, *, limit: int | None = None) -> list[ParallelArticle]:
    """Articles present in every one of `languages`, matched by English title, sorted by it."""
    bad = [lang for lang in languages if lang not in WIKI_FILES]
    if bad or "wiki_en" not in languages:
        raise FeatureError(f"languages must include 'wiki_en' and come from {sorted(WIKI_FILES)}, got {list(languages)}")
    raw = {lang: wiki_articles(lang) for lang in languages}
    by_lang: dict[str, dict[str, Document]] = {}
    for lang, data in raw.items():
        docs: dict[str, Document] = {}
        for key, entry in data.items():
            text = (entry.get("extract") or "").strip()
            if text:
                docs.setdefault(key, Document(text, lang, key))
                docs.setdefault(entry.get("title") or key, Document(text, lang, key))
        by_lang[lang] = docs
    out = []
    for key in sorted(raw["wiki_en"]):
        if all(key in by_lang[lang] for lang in languages):
            out.append(ParallelArticle(key, {lang: by_lang[lang][key] for lang in languages}))
            if limit is not None and len(out) >= limit:
                break
    return out


MULTILINGUAL_RANKS = ("specificity", "correlation")
"""How `MultilingualFeatures.table` ranks: by specificity (default) or by cross-language correlation."""


@dataclass
class MultilingualFeatures:
    """Per-article activations of every feature in each language, and what they say."""

    articles: list[str]
    languages: list[str]
    max_acts: Tensor
    """[L, A, F]: each feature's strongest activation on each article's lead, per language."""
    sum_acts: Tensor | None = None
    """[L, A, F]: the sum of each feature's activations over each lead's tokens (None: not recorded)."""
    n_tokens: Tensor | None = None
    """[L, A]: tokens of each lead."""
    corpus_mean: Tensor | None = None
    """[F]: mean activation per corpus token from `FeatureStats` (None: the leads themselves are the corpus)."""
    corpus_tokens: int = 0
    """Tokens behind `corpus_mean`."""

    def lift(self) -> Tensor:
        """[L, A, F]: the specificity of each feature on each lead (module docstring). The corpus is the
        `FeatureStats` given to `multilingual_features`, else every lead in every language together."""
        if self.sum_acts is None or self.n_tokens is None:
            raise FeatureError(
                "these MultilingualFeatures hold no per-lead sums: compute them with multilingual_features(...) "
                "or rank by 'correlation'"
            )
        n = self.n_tokens.double()[..., None]  # [L, A, 1]
        if self.corpus_mean is not None:
            return specificity(self.sum_acts, n, self.corpus_mean, self.corpus_tokens)
        mean = self.sum_acts.double().sum((0, 1)) / n.sum().clamp_min(1)
        q = self.sum_acts.double() / n.clamp_min(1)
        return torch.where(self.sum_acts > 0, q / mean.clamp_min(1e-300), torch.zeros_like(q)).float()

    def table(self, top: int = 20, min_articles: int = 2, *, rank: str = "specificity", min_correlation: float = 0.0):
        """Features that fire on the same concept across languages.

        A feature qualifies when it fires on at least `min_articles` articles in every language. Columns:
        correlation (mean Pearson correlation over language pairs of its [A] max-activation profiles, and
        each pair's), specificity (the largest, over articles, of the lowest over languages of its lift on
        that article's lead: how specific it is to one article in its weakest language), and score, what
        the rows are ranked by.

        `rank="specificity"` (default): qualifying features with correlation above `min_correlation`, by
        specificity, so that features that fire on every lead ("(", dates, names' pieces shared by many
        articles) sink. `rank="correlation"`: the old ranking, by correlation alone.
        """
        import pandas as pd

        if rank not in MULTILINGUAL_RANKS:
            raise FeatureError(f"unknown rank {rank!r}: rank by one of {', '.join(map(repr, MULTILINGUAL_RANKS))}")
        if isinstance(min_articles, bool) or not isinstance(min_articles, int) or min_articles < 1:
            raise FeatureError(f"min_articles must be an int >= 1, got {min_articles!r}")
        if not -1 <= min_correlation <= 1:
            raise FeatureError(f"min_correlation must be in [-1, 1] (a Pearson correlation), got {min_correlation!r}")
        L, A, F = self.max_acts.shape
        fires = (self.max_acts > 0).sum(1)  # [L, F]
        ok = (fires >= min_articles).all(0)
        z = self.max_acts - self.max_acts.mean(1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-9)
        pairs = list(combinations(range(L), 2))
        corr = torch.stack([(z[i] * z[j]).sum(0) for i, j in pairs])  # [P, F]
        agreement = corr.mean(0)
        if rank == "specificity" or self.sum_acts is not None:
            spec_AF = self.lift().amin(0)  # [A, F]: each article in the feature's weakest language
            spec = spec_AF.amax(0)
        else:
            spec_AF = spec = None
        if rank == "specificity":
            keep = ok & (agreement > min_correlation)
            score = torch.where(keep, spec, torch.full((F,), -1.0))
        else:
            score = torch.where(ok, agreement, torch.full((F,), -1.0))
        order = torch.argsort(score, descending=True, stable=True)[:top]
        order = order[score[order] > -1]
        short = [lang.replace("wiki_", "") for lang in self.languages]
        rows: dict[str, Any] = {"feature": order.tolist(), "score": score[order].numpy(),
                                "correlation": agreement[order].numpy()}
        if spec is not None:
            rows["specificity"] = spec[order].numpy()
        for p, (i, j) in enumerate(pairs):
            rows[f"corr_{short[i]}_{short[j]}"] = corr[p, order].numpy()
        by_article = spec_AF if (rank == "specificity" and spec_AF is not None) else self.max_acts.mean(0)  # [A, F]
        rows["articles"] = [
            ", ".join(self.articles[a] for a in torch.argsort(by_article[:, f], descending=True)[:3].tolist())
            for f in order.tolist()
        ]
        return pd.DataFrame(rows).set_index("feature")

    def language_table(self, top: int = 10):
        """Language-selective features: the share of a feature's activation mass on each language."""
        import pandas as pd

        mass = self.max_acts.sum(1)  # [L, F]
        share = mass / mass.sum(0, keepdim=True).clamp_min(1e-9)
        rows = []
        for li, lang in enumerate(self.languages):
            sel = torch.argsort(share[li] * (mass[li] > 0), descending=True)[:top]
            for f in sel.tolist():
                rows.append({"language": lang, "feature": f, "share": float(share[li, f]), "articles_fired": int((self.max_acts[li, :, f] > 0).sum())})
        return pd.DataFrame(rows)


def multilingual_features(
    model: Model, sae, articles: Sequence[ParallelArticle], *, stats: FeatureStats | None = None,
    tokens_per_doc: int = 48, batch_size: int = 16, progress: bool = True
) -> MultilingualFeatures:
    """Run each article's lead (first `tokens_per_doc` tokens) in every language through model and SAE.

    With `stats`, specificity is measured against its corpus (density x mean_act); without, against all
    the leads together (every language), which is corpus enough when there are many articles.
    """
    if not articles:
        raise FeatureError("no parallel articles given: call parallel_articles(limit=50) and pass its result")
    languages = list(articles[0].docs)
    shape = (len(languages), len(articles), sae.n_latents)
    out, sums = torch.zeros(shape), torch.zeros(shape)
    n_tok = torch.zeros(len(languages), len(articles))
    bar = tqdm(total=len(languages) * len(articles), desc="multilingual", disable=not progress)
    for li, lang in enumerate(languages):
        docs = [a.docs[lang] for a in articles]
        for s in range(0, len(docs), batch_size):
            lat = _latents(model, sae, [d.text for d in docs[s : s + batch_size]], tokens_per_doc)
            z = lat.z
            out[li, s : s + len(z)] = z.amax(1)
            sums[li, s : s + len(z)] = z.sum(1)
            n_tok[li, s : s + len(z)] = lat.keep.sum(1).float()
            bar.update(len(z))
    bar.close()
    mean = None if stats is None else (stats.density * stats.mean_act)
    return MultilingualFeatures([a.key for a in articles], languages, out, sums, n_tok, mean,
                                0 if stats is None else stats.n_tokens)


__all__ = [
    "MULTILINGUAL_RANKS",
    "MultilingualFeatures",
    "ParallelArticle",
    "PromptActivations",
    "TEXT_RANKS",
    "corpus_baseline",
    "features_for_text",
    "features_for_tokens",
    "multilingual_features",
    "parallel_articles",
    "prompt_activations",
    "specificity",
]
