"""The SAE family: one interface (`base.Sae`), one file per architecture."""

from .base import Sae, SaeOutput, fvu, geometric_median
from .topk import TopKSae

__all__ = ["Sae", "SaeOutput", "TopKSae", "fvu", "geometric_median"]
