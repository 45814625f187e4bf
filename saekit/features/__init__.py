"""Features: what each SAE latent does, as plain data.

- `stats`: `feature_stats(model, sae, texts) -> FeatureStats`, one streaming pass over the activation
  stream (density, de-duplicated top and sampled contexts, histogram, co-occurrence, logit effects,
  neighbours), saved compactly to and loaded from a folder; the interpretability score, the dense flag
  and the default order (score first, dense and dead features last) that the views use.
- `accumulators`: the per-statistic streaming accumulators `feature_stats` runs side by side.
- `geometry`: co-occurrence (Jaccard), decoder neighbours, logit effects.
- `unembed`: the model's final norm and unembedding as plain torch.
- `search`: features of a prompt, features for a text or for tokens, multilingual features; text and
  multilingual search rank by specificity (activation on the query over the corpus mean).
- `match`: feature splitting: SAEs of several widths matched by decoder cosine and co-activation, a tree
  from the smallest dictionary to the largest (`split_tree`).
- `map`: 2-D coordinates of the decoder directions (PCA built in, UMAP optional) and `dominant_label`.
"""

from __future__ import annotations

from ..errors import FeatureError, UnembedError
from .geometry import cooccurrence, decoder_neighbours, logit_effects
from .search import (
    LANGUAGES,
    MultilingualFeatures,
    ParallelArticle,
    PromptActivations,
    corpus_baseline,
    features_for_text,
    features_for_tokens,
    multilingual_features,
    parallel_articles,
    prompt_activations,
    specificity,
)
from .stats import DENSE_DENSITY, HIST_EDGES, PER_DOCUMENT, SORT_KEYS, FeatureStats, feature_stats, token_strings
from .unembed import Unembedding, direction_logits, find_final_norm, unembedding

__all__ = [
    "DENSE_DENSITY",
    "HIST_EDGES",
    "LANGUAGES",
    "FeatureError",
    "FeatureStats",
    "MultilingualFeatures",
    "PER_DOCUMENT",
    "ParallelArticle",
    "PromptActivations",
    "SORT_KEYS",
    "UnembedError",
    "Unembedding",
    "cooccurrence",
    "corpus_baseline",
    "decoder_neighbours",
    "direction_logits",
    "feature_stats",
    "features_for_text",
    "features_for_tokens",
    "find_final_norm",
    "logit_effects",
    "multilingual_features",
    "parallel_articles",
    "prompt_activations",
    "specificity",
    "token_strings",
    "unembedding",
]

# dictionary science: feature splitting across widths, the 2-D feature map
from .map import dominant_label, map_coordinates
from .match import Splits, coactivation, decoder_cosine, split_tree

__all__ += ["Splits", "coactivation", "decoder_cosine", "dominant_label", "map_coordinates", "split_tree"]
