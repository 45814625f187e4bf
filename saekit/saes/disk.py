"""The SAE folder on disk: SAELens 6's layout, readable by `sae_lens.SAE.load_from_disk` as it is.

    cfg.json                  SAELens's config fields for the architecture it loads the SAE as, its
                              `metadata` (hook_name in TransformerLens form), plus a "saekit" block: the
                              full SaeConfig, which is what saekit reads back (SAELens ignores the block)
    sae_weights.safetensors   exactly the tensors SAELens's class holds, in its names and layout
                              (W_enc [d_in, d_sae], W_dec [d_sae, d_in], ...)
    saekit_state.safetensors  only when needed: the state-dict entries that the SAELens tensors do not give
                              back exactly (BatchTopK's float32 scalar threshold in a bf16 SAE, training
                              buffers), so saving and loading is lossless

saekit's architectures map onto SAELens's as each class's `saelens_architecture` says: relu -> standard,
topk -> topk (with `k`), jumprelu -> jumprelu, gated -> gated, batchtopk and matryoshka -> jumprelu with the
global threshold on every latent (how SAELens ships BatchTopK SAEs for inference). Transcoders (TopK) have no
SAELens class: their folder names an architecture SAELens refuses, so no reader mistakes them for its ReLU
transcoders. Folders of the older saekit layout (`sae.safetensors`, saekit's tensor names) still load.
Nothing is ever unpickled; every damaged file is named in a `ConfigError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .. import durable
from ..config import ConfigError, SaeConfig

if TYPE_CHECKING:
    from .base import Sae

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
STATE_FILE = "saekit_state.safetensors"
LEGACY_WEIGHTS_FILE = "sae.safetensors"
WEIGHTS_FILES = (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE)
"""The weights file names `load` reads, in order of preference."""
SAELENS_VERSION = "6.54.12"
"""The SAELens release whose config classes and tensors this layout was checked against
(tests/saelens_fields.json; tests/test_saelens_format.py loads folders with it when it is installed)."""


def weights_file(folder: str | Path) -> Path | None:
    """The weights file of the SAE folder `folder` (the first of WEIGHTS_FILES that exists), or None."""
    return next((Path(folder) / n for n in WEIGHTS_FILES if (Path(folder) / n).exists()), None)


def save(sae: Sae, path: str | Path) -> Path:
    """Write `sae` into the folder `path` (created if needed); cfg.json last, so a folder with it is complete."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    durable.remove_stale_temporaries(path)  # half-written files of a killed earlier save
    tensors = {k: v.detach().contiguous() for k, v in sae.saelens_tensors().items()}
    extra = leftover_state(sae, tensors)
    durable.save_tensors(tensors, path / WEIGHTS_FILE)
    durable.crash_point("sae.save.after_weights")
    if extra:
        durable.save_tensors(extra, path / STATE_FILE)
    else:
        durable.remove(path / STATE_FILE)
    for old in (path / LEGACY_WEIGHTS_FILE,):  # a re-save over an older folder leaves one weights file
        durable.remove(old)
    durable.write_json(sae.saelens_cfg(), path / CFG_FILE)
    return path


def leftover_state(sae: Sae, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """State-dict entries that `sae.from_saelens_tensors(tensors)` does not give back exactly."""
    back = sae.from_saelens_tensors(dict(tensors))
    out = {}
    for k, v in sae.state_dict().items():
        got = back.get(k)
        if got is None or got.shape != v.shape or got.dtype != v.dtype or not torch.equal(got, v):
            out[k] = v.detach().contiguous()
    return out


def read(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[SaeConfig, dict[str, Tensor], bool, dict[str, Tensor]]:
    """What folder `path` holds: (the SaeConfig, the weights file's tensors, whether they are in saekit's
    older layout, the saekit_state tensors). Damaged or foreign files raise ConfigError naming them.
    `Sae.load` turns this into an SAE."""
    path = Path(path)
    weights = weights_file(path)
    if not (path / CFG_FILE).exists() or weights is None:
        present = sorted(p.name for p in path.iterdir()) if path.is_dir() else "nothing (no such folder)"
        raise ConfigError(
            f"{path} is not a saekit SAE folder: expected {CFG_FILE} and {WEIGHTS_FILE} in it, found {present} "
            f"(Sae.save writes both; other libraries' formats load through saekit.load_pretrained)"
        )
    raw = _read_cfg(path / CFG_FILE)
    if "saekit" not in raw:
        raise ConfigError(
            f"{path / CFG_FILE} has no 'saekit' block, so saekit did not write it: load SAELens, sparsify or "
            f"dictionary_learning folders with saekit.load_pretrained({str(path)!r})"
        )
    try:
        cfg = SaeConfig.from_dict(raw["saekit"])
    except ConfigError as e:
        raise ConfigError(f"{path / CFG_FILE}: {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(
            f"{path / CFG_FILE}: its 'saekit' block is not a valid SaeConfig ({type(e).__name__}: {e}); "
            f"the file was edited or truncated: save the SAE again"
        ) from None
    state = _read_tensors(path / STATE_FILE, device) if (path / STATE_FILE).exists() else {}
    return cfg, _read_tensors(weights, device), weights.name == LEGACY_WEIGHTS_FILE, state


def check_state(path: str | Path, expected: dict[str, Tensor], got: dict[str, Tensor]) -> None:
    """Raise ConfigError when the tensors read from `path` do not have the shapes the config's SAE needs."""
    want = {k: tuple(v.shape) for k, v in expected.items()}
    have = {k: tuple(v.shape) for k, v in got.items()}
    if want != have:
        raise ConfigError(
            f"{path}: the weights do not match cfg.json (expected shapes {want}, found {have}); "
            f"the folder mixes files from different SAEs: save the SAE again"
        )


def _read_cfg(file: Path) -> dict[str, Any]:
    try:
        raw = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file} is not valid JSON ({e}): the file is damaged; save the SAE again") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} holds a {type(raw).__name__}, not a config object: save the SAE again")
    return raw


def _read_tensors(file: Path, device: str | torch.device) -> dict[str, Tensor]:
    try:
        return load_file(str(file), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{file} is unreadable ({e}): the file is truncated or damaged; save the SAE again") from None


__all__ = [
    "CFG_FILE", "LEGACY_WEIGHTS_FILE", "SAELENS_VERSION", "STATE_FILE", "WEIGHTS_FILE", "WEIGHTS_FILES",
    "check_state", "leftover_state", "read", "save", "weights_file",
]
