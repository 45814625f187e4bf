"""saekit.gemm: the oneDNN float32 products give torch's values and gradients; everything else is torch's own."""

import pytest
import torch
import torch.nn.functional as F

from saekit import gemm


def _grads(fn, *ts):
    ts = [t.detach().clone().requires_grad_() for t in ts]
    out = fn(*ts)
    w = torch.randn_like(out)  # a non-trivial upstream gradient
    (out * w).sum().backward()
    return out.detach(), [t.grad for t in ts]


def _spy_onednn(monkeypatch, record=lambda *a: a) -> list:
    """Route oneDNN's linear through a spy; returns the list of `record(*args)` of its calls."""
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    class Spy:
        def __getattr__(self, name):
            if name == "_linear_pointwise":
                return lambda *a: calls.append(record(*a)) or real(*a)
            return getattr(torch.ops.mkldnn, name)

    monkeypatch.setattr(gemm.torch.ops, "mkldnn", Spy(), raising=False)
    return calls


@pytest.mark.parametrize("shape", [(1, 3, 5), (7, 64, 33), (256, 640, 1024)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_in_values_and_gradients(shape, bias):
    B, D, Fn = shape
    g = torch.Generator().manual_seed(B + D)
    x = torch.randn(B, D, generator=g)
    W = torch.randn(Fn, D, generator=g) / D**0.5
    b = torch.randn(Fn, generator=g)
    args = (x, W, b) if bias else (x, W)
    torch.manual_seed(0)
    ours, ours_g = _grads(lambda *t: gemm.linear(*t), *args)
    torch.manual_seed(0)
    ref, ref_g = _grads(lambda *t: F.linear(*t), *args)
    tol = dict(rtol=1e-5, atol=1e-5 * D**0.5)
    torch.testing.assert_close(ours, ref, **tol)
    for a, r in zip(ours_g, ref_g):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4 * B**0.5)


def test_matmul_with_a_decoder_matrix_and_a_3d_input():
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(4, 5, 48, generator=g).relu()  # [B, T, F]
    W_dec = torch.randn(48, 16, generator=g)
    torch.manual_seed(0)
    ours, ours_g = _grads(gemm.matmul, lat, W_dec)
    torch.manual_seed(0)
    ref, ref_g = _grads(torch.matmul, lat, W_dec)
    assert ours.shape == (4, 5, 16)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_g, ref_g):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


def test_float32_cpu_products_take_onednn_when_torch_has_it(monkeypatch):
    if not gemm.onednn_available():
        pytest.skip("this torch has no oneDNN linear")
    monkeypatch.setattr(gemm, "mkl_is_faster", lambda: False)  # as on the AMD machines (on Intel: MKL, tested below)
    calls = _spy_onednn(monkeypatch)
    x = torch.randn(8, 16, requires_grad=True)
    W = torch.randn(4, 16, requires_grad=True)
    gemm.linear(x, W).sum().backward()
    assert len(calls) == 3  # forward, grad_x, grad_W
    with torch.no_grad():
        gemm.linear(x, W)
    assert len(calls) == 4


def test_intel_cpus_keep_torchs_own_float32_product(monkeypatch):
    """Where MKL is the faster (Intel), float32 products are torch's own: no oneDNN call, the same values."""
    calls = _spy_onednn(monkeypatch)
    monkeypatch.setattr(gemm, "mkl_is_faster", lambda: True)
    x, W = torch.randn(8, 16, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    out = gemm.linear(x, W)
    out.sum().backward()
    assert calls == [] and torch.equal(out, F.linear(x, W))


def test_the_vendor_is_read_from_the_machine():
    try:
        cpuinfo = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    assert gemm.mkl_is_faster() == ("GenuineIntel" in cpuinfo)


def test_other_dtypes_use_torch_linear_unchanged():
    x = torch.randn(8, 16).bfloat16()
    W = torch.randn(4, 16).bfloat16()
    assert torch.equal(gemm.linear(x, W), F.linear(x, W))
    x64, W64 = x.double(), W.double()
    assert torch.equal(gemm.linear(x64, W64), F.linear(x64, W64))


def test_strided_row_samples_give_torch_values_and_reach_onednn_in_a_plain_layout(monkeypatch):
    """A row sample x[::8] (the pre-activation loss's) and its transpose in the weight gradient are neither
    row- nor column-major; they are copied to a plain layout before oneDNN (which was 1000x slower on them)."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(16, 32, generator=g)
    b = torch.randn(16, generator=g)
    xs = torch.randn(64, 32, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(0)
    ours, ours_g = _grads(lambda a, w, c: gemm.linear(a[::8], w, c), xs, W, b)
    torch.manual_seed(0)
    ref, ref_g = _grads(lambda a, w, c: F.linear(a[::8], w, c), xs, W, b)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_g, ref_g):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)
    if not gemm.onednn_available():
        return
    monkeypatch.setattr(gemm, "mkl_is_faster", lambda: False)
    layouts = _spy_onednn(monkeypatch, lambda a, w, *rest: all(t.is_contiguous() or t.t().is_contiguous() for t in (a, w)))
    x_s = torch.randn(64, 32, requires_grad=True)
    W_s = W.clone().requires_grad_()
    gemm.linear(x_s[::8], W_s, b).sum().backward()
    assert layouts == [True, True, True]


@pytest.mark.parametrize(
    "amx, avx512_bf16, expected",
    [(True, False, True), (False, True, True), (True, True, True), (False, False, False)],
)
def test_bfloat16_hardware_is_amx_tiles_or_avx512_bf16(monkeypatch, amx, avx512_bf16, expected):
    """Selection in bfloat16 ('auto') where the CPU multiplies it in hardware: AMX tiles or AVX512_BF16, not where
    it is emulated (an AVX2-only CPU, where bfloat16 products were 6x slower than float32)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert gemm.bf16_matrix_units() is expected


def test_a_failing_or_missing_probe_counts_as_no_bfloat16_hardware(monkeypatch):
    def broken():
        raise RuntimeError("cpuinfo unavailable")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert gemm.bf16_matrix_units() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert gemm.bf16_matrix_units() is True


def test_the_bfloat16_probe_agrees_with_the_machines_flags():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    hardware = " amx_tile" in flags or " avx512_bf16" in flags
    assert gemm.bf16_matrix_units() == hardware
