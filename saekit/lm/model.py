"""`Model`: a causal LM with stable hook-point names, and every run saekit makes through nnsight.

Everything outside this package sees plain tensors. A `Model` wraps nnsight 0.8's `TransformersModel`
(local, or weightless here and remote on NDIF) and adds stable hook-point names (`hookpoints.py`).

How the trace blocks are written, so that the same code runs remotely: a block references only local
variables holding plain data (tensors, dicts, tuples) and the helpers of `in_trace.py`, never `self`
(which would be pickled into the request). nnsight ships a block's source with the values it names;
saekit's own helpers travel by value (`remote.register_saekit`), because NDIF does not have saekit
installed. Values are sliced and cloned in the block before they are saved, so a download carries only
what was asked for.

Edits: the running methods take a {hookpoint: callable} mapping, (hookpoint, callable) pairs, or edit
objects. The door knows no edit classes: it asks each edit object for its plan (`specs(model, edits)`,
plain data that `in_trace.apply_plan` understands) and runs the plan inside the trace.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import HookPointError, ModelInputError, RemoteError
from ..hookpoints import (
    HookPoint,
    ModelLayout,
    find_layers,
    module_path_of,
    probe_block_roles,
    probe_clone_roles,
)
from ..tokens import keep_mask, separator_id
from .batched_runs import scored_runs
from .grad_run import grad_mode, hooked_logits, sorted_sites
from .grad_trace import grad_pass
from .in_trace import apply_plan, compare_logits, nll_of, read_sites, saved
from .remote import model_key, register_saekit, remote_backend, remote_errors

Edit = Callable[[Tensor], Tensor]
"""An edit maps the activation at a hook point [B, T, D] to its replacement."""

EditsLike = Any
"""What the running methods take as `edits`: None, a mapping {hookpoint: callable}, one edit object, or a
list of edit objects and (hookpoint, callable) pairs. An edit object (`saekit.interventions`' Splice,
Ablate, Clamp, Steer) has `specs(model, edits) -> [(hookpoint, spec), ...]`: its plan on `model` as plain
data (`in_trace.apply_op` lists the specs), given `edits`, all the edit objects of the run (so that edits
sharing work, such as several edits of one SAE that encode once, plan it together)."""


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
            raise ModelInputError(f"the prompt must be a non-empty string, got {text!r}")
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
            saved = saved(read_sites(nn_model, sites))
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
            apply_plan(nn_model, plan, keep, 0)
            out = nll_of(nn_model.output.logits, input_ids, return_logprobs)
        return (out["nll"], out["logp"]) if return_logprobs else out["nll"]

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, edits: EditsLike = None) -> Tensor:
        """Full logits [B, T, V] with optional edits at hook points."""
        plan = self._plan(edits)
        keep = self._keep(input_ids, attention_mask)
        kwargs = self._trace_kwargs(attention_mask)
        nn_model = self._nn
        with self._running(), self._nn.trace(input_ids, **kwargs):
            apply_plan(nn_model, plan, keep, 0)
            out = saved(nn_model.output.logits.clone())
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
            raise ModelInputError(f"token ids must lie in 0..{self.vocab_size - 1}, got {tokens!r}")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        nn_model = self._nn
        with self._running(), self._nn.trace(**self._backend_kwargs()) as tracer:
            clean = {}  # made fresh per trace: the edited invoke reads the clean invoke's logits from it
            with tracer.invoke(input_ids, attention_mask=mask):
                clean["logits"] = nn_model.output.logits
            with tracer.invoke(input_ids, attention_mask=mask):
                apply_plan(nn_model, plan, keep, 0)
                edited_logits = nn_model.output.logits  # first: the clean invoke has its logits once this returns
                out = compare_logits(clean["logits"], edited_logits, input_ids, token_ids, top)
        return {k: _as_tensor(v) for k, v in out.items()}

    def score_runs(
        self,
        input_ids: Tensor,
        runs: Sequence[EditsLike],
        attention_mask: Tensor | None = None,
        *,
        reads: Iterable[str] = (),
        kl: bool = True,
        score_clean: bool = True,
        targets: Tensor | None = None,
    ) -> dict[str, Any]:
        """The clean run and one run per entry of `runs` (each: edits, as the other running methods take)
        of `input_ids` [B, T], in one local forward (`batched_runs.py`): the blocks before every edit run
        once, the logits are never materialised (the head is applied in vocabulary chunks).

        Returns {'acts': {hookpoint: [B, T, D]} (the clean run at `reads`), 'nll': [R, B, T-1] and with
        `kl` 'kl': [R, B, T-1] (KL(clean || run r)), float64, run 0 the clean run}. The fast path of
        `compare` + `token_nll` + `capture`; local models only (a remote model raises a RemoteError).
        `score_clean=False` (with `kl=False`) leaves the clean run's head out: its 'nll' row is NaN. `targets`
        [B, T-1, K] (with `kl=False`): K next tokens scored at each position instead of the input's own ('nll'
        [R, B, T-1, K], one pass over the vocabulary for all K).
        """
        if self.remote:
            raise RemoteError("score_runs runs locally only: use compare / token_nll for a remote model")
        plans = [self._plan(edits) for edits in runs]
        hps = [self.resolve(h) for h in reads]
        keep = self._keep(input_ids, attention_mask)
        n_shared = min([self.n_layers] + [self._blocks_before(path, io) for plan in plans for (path, io), _ in plan])
        shared = [f"{self.layout.layers_path}.{i}" for i in range(n_shared)]
        cfg = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        dev = self.device
        with torch.inference_mode():
            return scored_runs(
                self.hf_model,
                input_ids.to(dev),
                None if attention_mask is None else attention_mask.to(dev),
                plans=plans,
                shared=shared,
                reads=[(hp.name, hp.module_path, hp.io) for hp in hps],
                keep=keep,
                softcap=getattr(cfg, "final_logit_softcapping", None),
                kl=kl,
                score_clean=score_clean,
                targets=targets,
            )

    def compare_batches(
        self, batches: Sequence[tuple[Tensor, Tensor]], edits: EditsLike
    ) -> list[dict[str, Tensor]]:
        """`compare` (nll only) over several (input_ids, attention_mask) batches, as one nnsight session
        (one request when remote)."""
        plan = self._plan(edits)
        jobs = [(ids, mask, self._keep(ids, mask)) for ids, mask in batches]
        nn_model = self._nn
        with self._running(), self._nn.session(**self._backend_kwargs()):
            results = saved([])
            for ids_BT, mask_BT, keep_BT in jobs:
                with nn_model.trace() as tracer:
                    clean = {}  # fresh per batch (a plain name would keep the previous batch's value)
                    with tracer.invoke(ids_BT, attention_mask=mask_BT):
                        clean["logits"] = nn_model.output.logits
                    with tracer.invoke(ids_BT, attention_mask=mask_BT):
                        apply_plan(nn_model, plan, keep_BT, 0)
                        edited_logits = nn_model.output.logits
                        results.append(compare_logits(clean["logits"], edited_logits, ids_BT, None, 0))
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
            results = saved([])
            for ids_BT, mask_BT, keep_BT in jobs:
                with nn_model.trace(ids_BT, attention_mask=mask_BT) as tracer:
                    acts = read_sites(nn_model, [site])[site[0]]
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
            raise ModelInputError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ModelInputError(f"temperature must be a positive finite number, got {temperature!r}")
        if not (0 < top_p <= 1):
            raise ModelInputError(f"top_p must be in (0, 1], got {top_p!r}")
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
                        apply_plan(nn_model, plan, keep, step)
                with tracer.invoke():
                    new_ids = saved(tracer.result[:, T:].clone())
        n = input_ids.shape[0]
        return new_ids[:n], new_ids[n:]

    def grad_logits(
        self,
        input_ids: Tensor,
        edits: Mapping[str, Edit],
        attention_mask: Tensor | None = None,
        *,
        grad: bool = True,
    ) -> Tensor:
        """Logits [B, T, V] of a local forward with autograd on (`grad`), each {hookpoint: callable} edit
        applied in execution order by plain torch hooks (`grad_run.py`): what circuit attribution
        differentiates. The edits may keep tensors of their own in the graph (SAE latents, error terms).

        Local only: the edits are callables of this process and the graph stays here. A remote model
        attributes through `spliced_runs` instead (plain-tensor splices, the metric and the gradients
        computed inside the trace by `grad_trace.py`); `saekit.attribute` picks the path by itself.
        """
        if self.remote:
            raise RemoteError(
                "grad_logits runs locally only (its edits are callables of this process): a remote model takes "
                "gradients inside traces through Model.spliced_runs, which saekit.attribute, faithfulness and "
                "ablate use by themselves"
            )
        if not isinstance(edits, Mapping):
            raise ModelInputError(f"edits must be a {{hookpoint: callable}} mapping, got {type(edits).__name__}")
        for h, fn in edits.items():
            if not callable(fn):
                raise ModelInputError(f"the edit at {h!r} must be a callable [B, T, D] -> [B, T, D], got {type(fn).__name__}")
        sites = sorted_sites(self, edits)
        ids = input_ids.to(self.device)
        mask = None if attention_mask is None else attention_mask.to(self.device)
        with grad_mode(grad):
            return hooked_logits(self.hf_model, sites, ids, mask)

    def spliced_runs(self, input_ids: Tensor, runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Tensor]]:
        """Runs of `input_ids` [B, T] with SAEs spliced as nodes, all in one nnsight session (one request
        when remote) with autograd on; what circuit attribution needs of a remote model (local or remote,
        `grad_trace.py` runs inside the traces). Returns one {name: tensor} per run.

        Each run: {'splices': {hookpoint: splice spec} (plain tensors, see `grad_trace.py`; a transcoder's
        spec names the hook point it reads as 'source'), 'values': bool (the 'nodes' splices' f and err
        back as 'f.<hookpoint>', 'err.<hookpoint>'), 'metric': a plain metric description or None ('metric'
        [B]), 'grad': bool (gradients of the summed metric at every node: 'grad_f.<hookpoint>' [B, T, F],
        'grad_err.<hookpoint>' [B, T, D]), 'steps': int (the prompts repeated that many times, one copy per
        integrated-gradients point; the gradients come back averaged over the copies), 'edges': an edge spec
        or None ('edges' [N, U], `grad_trace.edge_weights`)}.

        NDIF must allow gradients inside traces (`torch.autograd.grad` in the trace body on a forward run
        with autograd on); a server that runs traces in inference mode answers with a RemoteError.
        """
        jobs = []
        for run in runs:
            steps = int(run.get("steps") or 1)
            want = {k: run.get(k) for k in ("values", "metric", "grad", "edges")}
            want["steps"] = steps
            ids = input_ids if steps == 1 else input_ids.repeat(steps, 1)
            jobs.append((ids, self._splice_sites(run["splices"]), want))
        nn_model = self._nn
        with self._running(grad=True), self._nn.session(**self._backend_kwargs()):
            results = saved([])
            for ids_BT, sites, want in jobs:
                with nn_model.trace(ids_BT):
                    results.append(grad_pass(nn_model, sites, want))
        return [dict(r) for r in results]

    # -- internals ----------------------------------------------------------------------------

    def _splice_sites(self, splices: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, dict]]:
        """{hookpoint: splice spec} -> [(module_path, io, spec)] in execution order, with a 'read' site at each
        transcoder's input hook point (its spec's 'source')."""
        sites = []
        for h, spec in splices.items():
            hp = self.resolve(h)
            spec = dict(spec, name=h)
            if spec.get("source"):
                src = self.resolve(spec["source"])
                sites.append((src.order, src.module_path, src.io, {"op": "read", "key": spec["source"]}))
            sites.append((hp.order, hp.module_path, hp.io, spec))
        sites.sort(key=lambda s: s[0])
        return [s[1:] for s in sites]

    def _plan(self, edits: EditsLike) -> list[tuple[tuple[str, str], list[Any]]]:
        """Edits -> [((module_path, io), [spec or callable, ...]), ...] in execution order (validated here,
        before anything runs). Callables come first, then the edit objects' specs in the order given."""
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
                    raise ModelInputError(
                        f"unknown edit {e!r}: pass saekit.interventions edits (Splice, Ablate, Clamp, Steer), "
                        "(hookpoint, callable) pairs, or a {hookpoint: callable} mapping"
                    )
        for h, fn in pairs:
            if not callable(fn):
                raise ModelInputError(f"the edit at {h!r} must be a callable [B, T, D] -> [B, T, D], got {type(fn).__name__}")
        for e in objects:  # each edit object plans itself, among the others of this run
            pairs += e.specs(self, objects)
        grouped: dict[str, list[Any]] = {}
        for h, op in pairs:
            grouped.setdefault(h, []).append(op)
        hps = sorted(((self.resolve(h), ops) for h, ops in grouped.items()), key=lambda p: p[0].order)
        return [((hp.module_path, hp.io), ops) for hp, ops in hps]

    def _blocks_before(self, module_path: str, io: str) -> int:
        """How many blocks run entirely before the site (module_path, io): 0 for the embedding."""
        prefix = self.layout.layers_path + "."
        if not module_path.startswith(prefix):
            return 0
        index, _, rest = module_path[len(prefix):].partition(".")
        return int(index) + 1 if rest == "" and io == "output" else int(index)

    def _keep(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Bool [B, T]: prompt positions edit objects act on (the one keep rule: not the separator, not padding)."""
        return keep_mask(input_ids, attention_mask, self.separator_id).cpu()

    def _backend_kwargs(self) -> dict[str, Any]:
        """What nnsight's trace/session/generate take to run remotely (nothing when local)."""
        if not self.remote:
            return {}
        register_saekit()
        if self.remote == "local":
            return {"remote": "local"}
        if self._backend_cache is None:
            self._backend_cache = self._model_key()
        return {"backend": remote_backend(self._nn, self.remote, self._backend_cache)}

    def _model_key(self) -> str:
        return model_key(self._nn, self.name)

    def _trace_kwargs(self, attention_mask: Tensor | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        kwargs.update(self._backend_kwargs())
        return kwargs

    @contextlib.contextmanager
    def _running(self, grad: bool = False):
        """Inference mode locally (autograd on instead with `grad`); nnsight's remote failures as saekit's
        RemoteError. remote='local' loads the weights at its first trace: that happens here, outside inference
        mode, so that its buffers (rotary tables, embedding scales) can join a later gradient run."""
        if self.remote == "local" and not getattr(self._nn, "dispatched", True):
            with torch.inference_mode(False):
                self._nn.dispatch()
        if grad:
            with remote_errors(self.remote), torch.inference_mode(False), torch.enable_grad():
                yield
            return
        with remote_errors(self.remote), torch.inference_mode(not self.remote or self.remote == "local"):
            yield

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


def _as_tensor(x: Any) -> Tensor:
    if isinstance(x, tuple):
        x = x[0]
    return x
