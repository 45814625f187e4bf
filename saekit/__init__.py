"""saekit: sparse-autoencoder interpretability for language models, Jupyter-first.

harvest -> train -> evaluate -> inspect -> intervene. Importing saekit has no side effects: it
imports torch, but models, corpora, transformers and nnsight load only when a function asks.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import SaekitError
from .config import ConfigError, HarvestConfig, SaeConfig, SweepConfig, TrainConfig
from .data import TokenContexts, contexts, corpus
from .harvest import harvest
from .interventions import (
    Ablate, Clamp, Effects, Generation, LossChange, Splice, Steer, feature_means, generate, loss_change, loss_changes, measure,
)
from .metrics import EvalResult, evaluate, evaluate_many
from .lm import DEFAULT_MODEL, Model, load_model
from .saes import (
    BatchTopKSae,
    GatedSae,
    JumpReluSae,
    MatryoshkaSae,
    ReluSae,
    Sae,
    SaeOutput,
    SkipTranscoder,
    TopKSae,
    Transcoder,
    transcoder_hookpoints,
)
from .store import ActivationCache, ShuffleBuffer
from .interop import export_saelens, load_dictionary_learning, load_pretrained, load_saelens, load_sparsify
from .train import Trainer, train
from .steering_eval import SteeringEval, diff_of_means, steering_eval
from . import pretrained
from .circuits import Circuit, attribute
from . import circuits
from . import evals

__all__ = [
    "Ablate",
    "ActivationCache",
    "BatchTopKSae",
    "GatedSae",
    "JumpReluSae",
    "MatryoshkaSae",
    "ReluSae",
    "SkipTranscoder",
    "Transcoder",
    "export_saelens",
    "load_dictionary_learning",
    "load_pretrained",
    "load_saelens",
    "load_sparsify",
    "transcoder_hookpoints",
    "Clamp",
    "Effects",
    "Generation",
    "LossChange",
    "Splice",
    "Steer",
    "feature_means",
    "generate",
    "loss_change",
    "loss_changes",
    "measure",
    "ConfigError",
    "SaekitError",
    "DEFAULT_MODEL",
    "EvalResult",
    "HarvestConfig",
    "Model",
    "Sae",
    "SaeConfig",
    "SaeOutput",
    "ShuffleBuffer",
    "TokenContexts",
    "TopKSae",
    "TrainConfig",
    "Trainer",
    "contexts",
    "corpus",
    "evaluate",
    "evaluate_many",
    "harvest",
    "load_model",
    "train",
    "SteeringEval",
    "SweepConfig",
    "diff_of_means",
    "steering_eval",
    "pretrained",
    "evals",
    "__version__",
    "Circuit",
    "attribute",
    "circuits",
]
