"""Finding features: what fires on a prompt, on given tokens, and on the same concept across languages.

- `prompt_activations(model, sae, text)`: each token's active features and values (the prompt view).
- `features_for_text(model, sae, text, stats)`: features that fire most on a text, scored against their
  corpus maximum so that always-on features do not crowd the list.
- `features_for_tokens(stats, tokens)`: features whose top contexts peak on the given tokens.
- `parallel_articles()` + `multilingual_features(model, sae, articles)`: the built-in corpus holds
  English, Spanish and French Wikipedia leads of the same vital articles. The Spanish and French files
  are keyed by the title linked from their vital-article lists, which for ~1,400 (es) and ~2,500 (fr)
  articles is the English title, and otherwise by a local title; each entry's `title` field is the
  resolved article title. An article is matched when its key or title equals an English key (the
  `titles_*.json` files only map titles to topics, so they do not help). A feature "fires on the same
  concept across languages" when its per-article activation profile correlates across languages.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import WIKI_FILES, Document, wiki_articles
from ..errors import FeatureError
from ..stream import stream_activations
from .accumulators import LatentBatch
from .stats import FeatureStats, token_strings

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


def features_for_text(model: Model, sae, text: str | Sequence[str], stats: FeatureStats | None = None, *, top: int = 20):
    """Features that fire most on `text`, as a DataFrame (feature, max_on_text, mean_on_text, score, ...).

    With `stats`, score = max on the text / the feature's max over the corpus (1 means "as strongly as it
    ever fires"), and the table shows density and label; without, score is the raw max.
    """
    import pandas as pd

    texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise FeatureError("pass a non-empty string (or a list of them) to search features for")
    lat = _latents(model, sae, texts, 512)
    zk = lat.z[lat.keep]  # [n, F]
    mx, mean = zk.amax(0), zk.mean(0)
    score = mx / stats.max_act.clamp_min(1e-6) if stats is not None else mx
    score = torch.where(mx > 0, score, torch.zeros_like(score))
    order = torch.argsort(score, descending=True)[:top]
    order = order[score[order] > 0]
    df = pd.DataFrame({
        "feature": order.tolist(),
        "score": score[order].numpy(),
        "max_on_text": mx[order].numpy(),
        "mean_on_text": mean[order].numpy(),
    })
    if stats is not None:
        df["density"] = stats.density[order].numpy()
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


@dataclass
class MultilingualFeatures:
    """Per-article maximum activation of every feature in each language, and what it says."""

    articles: list[str]
    languages: list[str]
    max_acts: Tensor
    """[L, A, F]: each feature's strongest activation on each article's lead, per language."""

    def table(self, top: int = 20, min_articles: int = 2):
        """Features whose article profile agrees across languages: score = mean Pearson correlation over
        language pairs of the [A] profiles; a feature must fire on `min_articles` articles in every language."""
        import pandas as pd

        L, A, F = self.max_acts.shape
        fires = (self.max_acts > 0).sum(1)  # [L, F]
        ok = (fires >= min_articles).all(0)
        z = self.max_acts - self.max_acts.mean(1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-9)
        pairs = list(combinations(range(L), 2))
        corr = torch.stack([(z[i] * z[j]).sum(0) for i, j in pairs])  # [P, F]
        score = torch.where(ok, corr.mean(0), torch.full((F,), -1.0))
        order = torch.argsort(score, descending=True)[:top]
        order = order[score[order] > -1]
        short = [lang.replace("wiki_", "") for lang in self.languages]
        rows: dict[str, Any] = {"feature": order.tolist(), "score": score[order].numpy()}
        for p, (i, j) in enumerate(pairs):
            rows[f"corr_{short[i]}_{short[j]}"] = corr[p, order].numpy()
        mean_over = self.max_acts.mean(0)  # [A, F]
        rows["articles"] = [
            ", ".join(self.articles[a] for a in torch.argsort(mean_over[:, f], descending=True)[:3].tolist())
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
    model: Model, sae, articles: Sequence[ParallelArticle], *, tokens_per_doc: int = 48, batch_size: int = 16, progress: bool = True
) -> MultilingualFeatures:
    """Run each article's lead (first `tokens_per_doc` tokens) in every language through model and SAE."""
    if not articles:
        raise FeatureError("no parallel articles given: call parallel_articles(limit=50) and pass its result")
    languages = list(articles[0].docs)
    out = torch.zeros(len(languages), len(articles), sae.n_latents)
    bar = tqdm(total=len(languages) * len(articles), desc="multilingual", disable=not progress)
    for li, lang in enumerate(languages):
        docs = [a.docs[lang] for a in articles]
        for s in range(0, len(docs), batch_size):
            z = _latents(model, sae, [d.text for d in docs[s : s + batch_size]], tokens_per_doc).z
            out[li, s : s + len(z)] = z.amax(1)
            bar.update(len(z))
    bar.close()
    return MultilingualFeatures([a.key for a in articles], languages, out)


__all__ = [
    "MultilingualFeatures",
    "ParallelArticle",
    "PromptActivations",
    "features_for_text",
    "features_for_tokens",
    "multilingual_features",
    "parallel_articles",
    "prompt_activations",
]
