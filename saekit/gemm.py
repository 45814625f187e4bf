"""Dense products (`x @ W.T + b`) through the fastest full-precision GEMM the device has.

On the CPU, torch sends float32 `addmm` / `linear` to MKL's sgemm. oneDNN, which torch also ships, ran the
same float32 products about 1.8x faster on the AMD machines measured here (2-core x86_64, AVX2 and AVX-512), but
5-20% *slower* than MKL on an Intel Xeon (`benchmarks/bench_train_device.py --device cpu` prints both; shapes of
the training step and of `evaluate`'s vocabulary head, BENCHMARKS.md "Third pass"), with float32 rounding (no
reduced-precision accumulation; the tests compare values and gradients with `torch.nn.functional.linear`). `linear`
takes oneDNN for float32 CPU tensors on CPUs whose vendor is not Intel (`mkl_is_faster`) and torch's own everywhere
else (Intel CPUs, CUDA, bfloat16, an install without oneDNN).

Gradients: `linear` is differentiable; its backward does its two products through the same path
(grad_x = grad @ W, grad_W = grad.T @ x). Code shipped into traces (`lm/in_trace.py`) keeps plain torch:
it runs on servers whose torch build is not ours.
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.nn.functional as F
from torch import Tensor


def onednn_available() -> bool:
    """True when this torch has oneDNN on the CPU and its linear operator (checked on every call: no state)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def bf16_matrix_units() -> bool:
    """True when this CPU multiplies bfloat16 matrices in hardware: Intel AMX tiles, where torch's bfloat16 products
    ran 4-6x faster than float32 ones, or AVX512_BF16 dot-product instructions (AMD Zen 4, Intel Cooper Lake and
    later), where they ran 2.0x faster (an AMD EPYC at the training step's shape, [4096, 640] x [640, 16384]: 16,676
    against 8,417 tokens/s; `benchmarks/bench_train_device.py --device cpu`, BENCHMARKS.md). On CPUs with neither,
    bfloat16 products are emulated and slower (an AVX2-only EPYC: 840 against 5,436 tokens/s). Asked of torch on
    every call: no state."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and bool(probe()):
                return True
        except RuntimeError:
            continue
    return False


@functools.cache
def _cpu_vendor() -> str:
    """The CPU vendor ('GenuineIntel', 'AuthenticAMD', ...; '' where it cannot be read): a fact of the machine,
    read from /proc/cpuinfo once."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def mkl_is_faster() -> bool:
    """True on Intel CPUs, where MKL's float32 products (torch's own) beat oneDNN's (module docstring)."""
    return _cpu_vendor() == "GenuineIntel"


def _takes_onednn(x: Tensor, W: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and W.device.type == "cpu"
        and x.dtype == torch.float32
        and W.dtype == torch.float32
        and W.dim() == 2
        and x.dim() >= 1
        and onednn_available()
        and not mkl_is_faster()
    )


def _plain_layout(t: Tensor) -> Tensor:
    """t itself when it is row-major or (2-D) its transpose is, else a row-major copy."""
    if t.is_contiguous() or (t.dim() == 2 and t.t().is_contiguous()):
        return t
    return t.contiguous()


def _product(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """x @ W.T + b without autograd: oneDNN where `_takes_onednn`, else torch's linear."""
    if _takes_onednn(x, W) and (b is None or b.dtype == torch.float32):
        # oneDNN wants each operand row- or column-major; any other strides (a row sample x[::8], and its
        # transpose in the weight gradient) sent it to a path 1000x slower (57 s for one [16384, 512] x [512, 640])
        return torch.ops.mkldnn._linear_pointwise(_plain_layout(x), _plain_layout(W), b, "none", [], "")
    return F.linear(x, W, b)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_ND: Tensor, W_FD: Tensor, b_F: Tensor | None):
        ctx.save_for_backward(x_ND, W_FD)
        ctx.has_bias = b_F is not None
        ctx.set_materialize_grads(False)  # as torch's own linear: no gradient in, no products, None out
        return _product(x_ND, W_FD, b_F)

    @staticmethod
    def backward(ctx, grad_NF: Tensor):
        x_ND, W_FD = ctx.saved_tensors
        grad_x = grad_W = grad_b = None
        if grad_NF is None:
            return grad_x, grad_W, grad_b
        if ctx.needs_input_grad[0]:
            grad_x = _product(grad_NF, W_FD.t(), None)  # [N, F] @ [F, D]
        if ctx.needs_input_grad[1]:
            grad_W = _product(grad_NF.t(), x_ND.t(), None)  # [F, N] @ [N, D]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_NF.sum(0)
        return grad_x, grad_W, grad_b


def linear(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """`torch.nn.functional.linear(x, W, b)` (x @ W.T + b; W [F, D], x [..., D]) through oneDNN on float32 CPU
    tensors, with gradients. Any other device or dtype: torch's own linear, unchanged."""
    if not _takes_onednn(x, W):
        return F.linear(x, W, b)
    if torch.is_grad_enabled() and (x.requires_grad or W.requires_grad or (b is not None and b.requires_grad)):
        if x.dim() != 2:
            lead = x.shape[:-1]
            return _Linear.apply(x.reshape(-1, x.shape[-1]), W, b).reshape(*lead, W.shape[0])  # [N, D] -> [..., F]
        return _Linear.apply(x, W, b)
    return _product(x, W, b)


def matmul(a: Tensor, B: Tensor) -> Tensor:
    """a @ B for a [..., K] and a matrix B [K, M] (a decoder: latents_BF @ W_dec_FD) through `linear`."""
    return linear(a, B.t())


__all__ = ["bf16_matrix_units", "linear", "matmul", "mkl_is_faster", "onednn_available"]
