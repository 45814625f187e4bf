"""Stable hook-point names resolved from the module tree, for any decoder-only transformer.

    embed            output of the token embedding (after any built-in scaling, e.g. Gemma's sqrt(d))
    resid_pre.L      input of block L            resid_post.L   output of block L
    attn_out.L       attention's contribution to the residual stream (after a post-attention norm if any)
    mlp_in.L         input of the MLP module     mlp_out.L      MLP's contribution to the residual stream

Resolution is structural, not by model name: the block list is the ModuleList with one entry per
layer, and the roles of a block's children come from a one-time probe of block 0 that records every
child's input and output and finds the two child outputs `a` (first) and `m` (second) with
resid_post = resid_pre + a + m. That covers GPT-2, Llama, Qwen2, Gemma 2/3 (post-norms) and
GPT-NeoX (parallel residual) without a table of architectures. No nnsight here: plain torch.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from .errors import HookPointError

# execution order inside a block, used to sort capture requests (nnsight needs them in order)
KIND_ORDER = {"embed": -1, "resid_pre": 0, "attn_out": 1, "mlp_in": 2, "mlp_out": 3, "resid_post": 4}
LAYER_KINDS = ("resid_pre", "attn_out", "mlp_in", "mlp_out", "resid_post")


@dataclass(frozen=True)
class HookPoint:
    """Where a stable name lives in a particular model."""

    name: str
    """Stable name, e.g. 'resid_post.6'."""
    kind: str
    """One of 'embed', 'resid_pre', 'attn_out', 'mlp_in', 'mlp_out', 'resid_post'."""
    layer: int
    """Block index (-1 for 'embed')."""
    module_path: str
    """Dotted path of the module in the model, e.g. 'model.layers.6.mlp'."""
    io: str
    """'output' or 'input' of that module."""

    @property
    def order(self) -> tuple[int, int]:
        return (self.layer, KIND_ORDER[self.kind])


@dataclass(frozen=True)
class BlockRoles:
    """Names of block children playing each role (relative to the block)."""

    attn_out: str
    """Child whose output is attention's contribution to the residual."""
    mlp_out: str
    """Child whose output is the MLP's contribution to the residual."""
    mlp: str
    """The MLP module itself (its input is mlp_in)."""


@dataclass(frozen=True)
class ModelLayout:
    """Hook-point layout of one model: where the blocks and embedding are and each child's role."""

    layers_path: str
    n_layers: int
    embed_path: str
    roles: BlockRoles
    d_model: int

    def names(self) -> list[str]:
        return ["embed"] + [f"{kind}.{L}" for L in range(self.n_layers) for kind in LAYER_KINDS]

    def resolve(self, name: str) -> HookPoint:
        if not isinstance(name, str):
            raise HookPointError(f"hook point must be a string like 'resid_post.6', got {name!r}")
        if name == "embed":
            return HookPoint("embed", "embed", -1, self.embed_path, "output")
        m = re.fullmatch(r"([a-z_]+)\.(-?\d+)", name)
        if m is None or m.group(1) not in KIND_ORDER or m.group(1) == "embed":
            kinds = ", ".join(f"{k}.L" for k in LAYER_KINDS)
            raise HookPointError(
                f"unknown hook point {name!r}: valid names are 'embed' and {kinds} with L in 0..{self.n_layers - 1} "
                f"(e.g. 'resid_post.{self.n_layers // 2}')."
            )
        kind, layer = m.group(1), int(m.group(2))
        if not 0 <= layer < self.n_layers:
            raise HookPointError(
                f"hook point {name!r}: layer {layer} is out of range, this model has {self.n_layers} layers "
                f"(valid: 0..{self.n_layers - 1})."
            )
        block = f"{self.layers_path}.{layer}"
        path, io = {
            "resid_pre": (block, "input"),
            "resid_post": (block, "output"),
            "attn_out": (f"{block}.{self.roles.attn_out}", "output"),
            "mlp_out": (f"{block}.{self.roles.mlp_out}", "output"),
            "mlp_in": (f"{block}.{self.roles.mlp}", "input"),
        }[kind]
        return HookPoint(name, kind, layer, path, io)


def find_layers(model: nn.Module, n_layers: int | None) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the longest list of same-class modules (or of length n_layers)."""
    best: tuple[str, nn.ModuleList] | None = None
    for path, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            if n_layers is not None and len(mod) != n_layers:
                continue
            if best is None or len(mod) > len(best[1]):
                best = (path, mod)
    if best is None:
        raise HookPointError(
            f"could not find the transformer blocks in {type(model).__name__}: expected an nn.ModuleList of "
            f"{n_layers or 'N'} identical blocks."
        )
    return best


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


def probe_block_roles(block: nn.Module, run: Callable[[], None]) -> BlockRoles:
    """Run `run()` (a forward that reaches `block`) with hooks on the block's children; infer roles."""
    records: list[tuple[str, torch.Tensor | None, torch.Tensor | None]] = []
    block_io: dict[str, torch.Tensor] = {}
    handles = []

    def child_hook(name: str):
        def hook(mod, args, kwargs, out):
            inp = _first_tensor(args) if args else _first_tensor(kwargs.get("hidden_states"))
            records.append((name, inp, _first_tensor(out)))

        return hook

    def block_hook(mod, args, kwargs, out):
        block_io["in"] = _first_tensor(args) if args else _first_tensor(kwargs.get("hidden_states"))
        block_io["out"] = _first_tensor(out)
        raise _StopProbe

    for name, child in block.named_children():
        handles.append(child.register_forward_hook(child_hook(name), with_kwargs=True))
    handles.append(block.register_forward_hook(block_hook, with_kwargs=True))
    try:
        run()
    except _StopProbe:
        pass
    finally:
        for h in handles:
            h.remove()
    x, y = block_io.get("in"), block_io.get("out")
    if x is None or y is None:
        raise HookPointError("could not probe the transformer block: its forward did not run on the probe input")
    delta = (y - x).double()
    scale = delta.norm().clamp_min(1e-12)
    seen: dict[str, int] = {}
    outs = []
    for name, _inp, out in records:
        if name in seen or out is None or out.shape != x.shape:
            continue
        seen[name] = len(outs)
        outs.append((name, out.double()))
    best: tuple[float, str, str] | None = None
    for i, (na, a) in enumerate(outs):
        for nm, mo in outs[i + 1 :]:
            err = float((delta - a - mo).norm() / scale)
            # prefer later children on ties: a post-norm's output over the raw module it normalises
            if best is None or err < best[0] - 1e-6 or (abs(err - best[0]) <= 1e-6):
                best = (err, na, nm)
    if best is None or best[0] > 1e-3:
        raise HookPointError(
            "could not identify the attention and MLP contributions of the transformer block "
            f"(children: {[n for n, _ in outs]}); this architecture's block does not have the form "
            "resid_post = resid_pre + attn + mlp."
        )
    _, attn_out, mlp_out = best
    mlp = mlp_out
    by_name = {n: (inp, out) for n, inp, out in records}
    modules = dict(block.named_children())
    # a post-norm or dropout holds no weight matrix: the MLP is the child whose output feeds it
    while not _has_matrix(modules[mlp]) and by_name[mlp][0] is not None:
        feeder = [n for n, _i, o in records if n != mlp and o is not None and o.shape == by_name[mlp][0].shape
                  and torch.equal(o, by_name[mlp][0])]
        if not feeder:
            break
        mlp = feeder[-1]
    return BlockRoles(attn_out=attn_out, mlp_out=mlp_out, mlp=mlp)


CLONE_VOCAB = 64
"""Vocabulary of the probe clone: enough for the probe's ids, small enough to cost nothing."""


def small_clone(model: nn.Module, seed: int = 0) -> nn.Module:
    """A randomly initialised copy of `model`'s architecture with 1 layer and a 64-token vocabulary.

    Built from `model.config` alone, so `model` may be weightless (meta device, as for NDIF). Per-layer
    lists in the config (Gemma 3's `layer_types`) are cut to the first layer. Widths stay as they are:
    the probe needs the real block, whose cost is one layer's weights on the CPU.
    """
    config = copy.deepcopy(model.config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
    for key, value in list(vars(text).items()):
        if isinstance(value, list) and n is not None and len(value) == n and n > 1:
            setattr(text, key, value[:1])
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(text, key):
            setattr(text, key, 1)
    if hasattr(text, "vocab_size"):
        text.vocab_size = CLONE_VOCAB
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        tid = getattr(text, key, None)
        if isinstance(tid, int) and tid >= CLONE_VOCAB:
            setattr(text, key, 0)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        clone = type(model)(config)
    return clone.float().eval()


def probe_clone_roles(model: nn.Module, layers_path: str) -> BlockRoles:
    """Block roles of a weightless model, probed on `small_clone(model)` (same architecture, real numbers)."""
    clone = small_clone(model)
    block = clone.get_submodule(layers_path)[0]

    def run() -> None:
        with torch.inference_mode():
            clone(input_ids=torch.tensor([[1, 2, 3]]))

    return probe_block_roles(block, run)


def _has_matrix(module: nn.Module) -> bool:
    return any(p.ndim >= 2 for p in module.parameters())


class _StopProbe(Exception):
    pass


def module_path_of(model: nn.Module, target: nn.Module) -> str:
    for path, mod in model.named_modules():
        if mod is target:
            return path
    raise HookPointError(f"module {type(target).__name__} is not part of the model")


# -- TransformerLens names (what SAELens configs use) ------------------------------------------------

# -- hook-point names ----------------------------------------------------------------------------

_TL_HOOKS = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_post": "resid_post",
    "hook_mlp_out": "mlp_out",
    "hook_attn_out": "attn_out",
    "hook_mlp_in": "mlp_in",
    "ln2.hook_normalized": "mlp_in",
}


def from_transformerlens_hook(name: str | None) -> str | None:
    """'blocks.6.hook_resid_post' -> 'resid_post.6' (other names pass through unchanged)."""
    if not name:
        return name
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in _TL_HOOKS:
        return f"{_TL_HOOKS[m.group(2)]}.{m.group(1)}"
    return "embed" if name == "hook_embed" else name


def to_transformerlens_hook(name: str | None) -> str | None:
    """'resid_post.6' -> 'blocks.6.hook_resid_post' (the names SAELens configs use)."""
    if not name:
        return name
    m = re.fullmatch(r"([a-z_]+)\.(\d+)", name)
    if m and m.group(1) in ("resid_pre", "resid_post", "mlp_out", "attn_out", "mlp_in"):
        return f"blocks.{m.group(2)}.hook_{m.group(1)}"
    return "hook_embed" if name == "embed" else name
