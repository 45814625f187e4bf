"""The model's read-out: its final norm and unembedding, as plain torch (no nnsight).

`direction_logits` answers "which tokens does this residual direction promote?" for SAE decoder rows.

Final norm, handled as users expect: the direction goes through the model's *own* final norm module
before the unembedding, and the norm's output at zero (a LayerNorm's bias) is subtracted:

    logits_V = W_U @ (norm(d) - norm(0))

For RMSNorm this is W_U @ (gain * d / rms(d)), where the gain is whatever the model uses: Gemma's
RMSNorm multiplies by (1 + weight), Llama's by weight, GPT-2's LayerNorm also centres d. Using the
module itself gets each family right without a table of architectures. The 1 / rms(d) factor is one
positive number per direction: rankings equal TransformerLens' `W_dec @ W_U` with the final norm's
weights folded in, and values read as "the logits if the final residual pointed exactly along d".
A final logit soft-cap (Gemma 2's tanh) is monotone and is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import UnembedError

if TYPE_CHECKING:
    from ..lm import Model


@dataclass
class Unembedding:
    """The last two steps of a causal LM: final norm, then unembedding."""

    norm: nn.Module | None
    """The module whose output feeds the unembedding (None when the model has no final norm)."""
    W_U: Tensor
    """Unembedding matrix [V, D] (the output embedding's weight)."""

    @torch.no_grad()
    def logits(self, dirs_ND: Tensor) -> Tensor:
        """Logits [N, V] of directions [N, D] through the final norm (see the module docstring)."""
        dirs_ND = dirs_ND.to(self.W_U.device, self.W_U.dtype)
        if self.norm is not None:
            dirs_ND = self.norm(dirs_ND) - self.norm(torch.zeros_like(dirs_ND[:1]))
        return dirs_ND @ self.W_U.T


def find_final_norm(hf: nn.Module) -> nn.Module | None:
    """The module whose output is the unembedding's input, found by a one-token probe forward.

    Modules that return their input unchanged (dropout in eval mode) are skipped, so the answer is
    the norm itself. None when the unembedding reads the last block's output directly.
    """
    head = hf.get_output_embeddings()
    if head is None:
        raise UnembedError(f"{type(hf).__name__} has no output embedding: pass a causal LM (…ForCausalLM)")
    p = next(hf.parameters())
    if p.device.type == "meta":
        raise UnembedError("the model is weightless (remote); logit effects need a local copy of the weights")
    seen: list[tuple[nn.Module, Tensor, Tensor]] = []
    head_in: list[Tensor] = []

    def record(mod, args, out):
        if args and isinstance(args[0], Tensor) and isinstance(out, Tensor):
            seen.append((mod, args[0].detach(), out.detach()))

    handles = [m.register_forward_hook(record) for m in hf.modules() if m is not hf and m is not head]
    handles.append(head.register_forward_pre_hook(lambda m, args: head_in.append(args[0].detach())))
    try:
        with torch.no_grad():
            hf(input_ids=torch.tensor([[1, 2]], device=p.device))
    finally:
        for h in handles:
            h.remove()
    if not head_in:
        raise UnembedError(f"{type(hf).__name__}'s forward never called its output embedding")
    target = head_in[0]
    for mod, x, out in seen:
        same_shape = out.shape == target.shape
        if same_shape and torch.equal(out, target) and not (x.shape == out.shape and torch.equal(x, out)):
            return mod
    return None


def unembedding(model: Model | nn.Module) -> Unembedding:
    """The final norm and W_U [V, D] of a saekit `Model` (or a transformers causal LM)."""
    hf = getattr(model, "hf_model", model)
    head = hf.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise UnembedError(f"{type(hf).__name__} has no output embedding weight: pass a causal LM")
    return Unembedding(find_final_norm(hf), head.weight.detach())


def direction_logits(model: Model | nn.Module, dirs_ND: Tensor) -> Tensor:
    """Logits [N, V] that directions [N, D] (e.g. SAE decoder rows) produce through the read-out."""
    return unembedding(model).logits(dirs_ND)


__all__ = ["UnembedError", "Unembedding", "direction_logits", "find_final_norm", "unembedding"]
