"""The SAE family: one interface (`base.Sae`), one file per architecture."""

from .base import Sae, SaeOutput, fvu, geometric_median
from .batchtopk import BatchTopKSae
from .gated import GatedSae
from .jumprelu import JumpReluSae
from .matryoshka import MatryoshkaSae
from .relu import ReluSae
from .topk import TopKSae
from .transcoder import SkipTranscoder, Transcoder, transcoder_hookpoints

__all__ = [
    "BatchTopKSae",
    "GatedSae",
    "JumpReluSae",
    "MatryoshkaSae",
    "ReluSae",
    "Sae",
    "SaeOutput",
    "SkipTranscoder",
    "TopKSae",
    "Transcoder",
    "fvu",
    "geometric_median",
    "transcoder_hookpoints",
]
