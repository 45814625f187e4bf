"""The SAE family: one interface (`base.Sae`), one file per architecture.

An architecture's file holds everything about it: the recipe (`forward`), the encoder (`encode_raw`, and
`plain_encoder` for edits inside traces), and the config fields it needs (`required_fields`); defining
the class registers it (`architectures()` lists the names). Every objective's FVU is `saekit.metrics.fvu`.
"""

from ..metrics import fvu
from .base import Sae, SaeOutput, architectures, geometric_median, is_dense_code
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
    "architectures",
    "fvu",
    "geometric_median",
    "is_dense_code",
    "transcoder_hookpoints",
]
