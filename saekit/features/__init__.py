"""Features: what each SAE latent does, as plain data.

- `stats`: `feature_stats(model, sae, texts) -> FeatureStats`, one streaming pass over the activation
  stream (density, top and sampled contexts, histogram, co-occurrence, logit effects, neighbours),
  saved to and loaded from a folder.
- `accumulators`: the per-statistic streaming accumulators `feature_stats` runs side by side.
- `geometry`: co-occurrence (Jaccard), decoder neighbours, logit effects.
- `unembed`: the model's final norm and unembedding as plain torch.
- `search`: features of a prompt, features for a text or for tokens, multilingual features.
"""

from __future__ import annotations

from ..errors import FeatureError, UnembedError
from .geometry import cooccurrence, decoder_neighbours, logit_effects
from .search import (
    LANGUAGES,
    MultilingualFeatures,
    ParallelArticle,
    PromptActivations,
    features_for_text,
    features_for_tokens,
    multilingual_features,
    parallel_articles,
    prompt_activations,
)
from .stats import HIST_EDGES, FeatureStats, feature_stats, token_strings
from .unembed import Unembedding, direction_logits, find_final_norm, unembedding

__all__ = [
    "HIST_EDGES",
    "LANGUAGES",
    "FeatureError",
    "FeatureStats",
    "MultilingualFeatures",
    "ParallelArticle",
    "PromptActivations",
    "UnembedError",
    "Unembedding",
    "cooccurrence",
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
    "token_strings",
    "unembedding",
]
