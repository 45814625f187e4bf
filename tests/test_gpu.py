"""The GPU path (skipped without CUDA; `bash benchmarks/device_check.sh` runs it on a GPU machine).

Every fast path gives the readable reference path's values and gradients on the GPU: the sparse TopK
kernels, the chunked head scores, the stacked evaluation runs (`Model.score_runs`) and `evaluate`; a short
training run on CUDA (bf16 autocast, pinned non-blocking copies) lands where the CPU run lands; the
step's sync-free bookkeeping matches the readable form.
"""

import pytest
import torch

import saekit
from saekit import Sae, SaeConfig, TrainConfig
from saekit.interventions import Splice
from saekit.lm.head_scores import head_scores
from saekit.metrics import _zero_at, kl_divergence
from saekit.saes.kernels import dense_decode, sparse_decode, topk_encode
from saekit.train import Trainer, fire_counts
from tiny import tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
TEXTS = [f"Paris is the capital of France. Line {i}: the cat sat on the mat, {i * 7} times. " for i in range(16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_kernels_on_gpu_equal_dense_reference(dtype):
    """Values and gradients of topk_encode + sparse_decode = the dense [B, F] math, on CUDA (fp32, and under
    bf16 autocast as the trainer runs them)."""
    g = torch.Generator().manual_seed(0)
    B, D, F, k = 512, 64, 2048, 16
    x = torch.randn(B, D, generator=g).cuda()
    W_enc = torch.randn(F, D, generator=g).cuda().requires_grad_()
    b_enc = torch.randn(F, generator=g).cuda().requires_grad_()
    W_dec = torch.randn(F, D, generator=g).cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        acts, idx = topk_encode(x, W_enc, b_enc, k)
        out = sparse_decode(acts, idx, W_dec)
    out.float().pow(2).sum().backward()
    grads = [t.grad.clone() for t in (W_enc, b_enc, W_dec)]
    for t in (W_enc, b_enc, W_dec):
        t.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        pre = x @ W_enc.t() + b_enc
        mask = torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, idx, True)
        ref = (pre * mask).relu() @ W_dec
    ref.float().pow(2).sum().backward()
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    torch.testing.assert_close(dense_decode(acts.float(), idx, W_dec.detach()), out.float().detach(), **tol)
    for got, want in zip(grads, (W_enc.grad, b_enc.grad, W_dec.grad)):
        torch.testing.assert_close(got, want, **tol)


def test_head_scores_on_gpu_equal_log_softmax():
    g = torch.Generator().manual_seed(1)
    h = (torch.randn(3, 40, 16, generator=g) * 3).cuda()
    W, tgt = torch.randn(5000, 16, generator=g).cuda(), torch.randint(0, 5000, (40,), generator=g).cuda()
    out = head_scores(h, W, None, tgt, chunk_bytes=3 * 40 * 4 * 512)
    logp = torch.log_softmax((h @ W.t()).double(), -1)
    nll = -logp.gather(-1, tgt.view(1, 40, 1).expand(3, 40, 1)).squeeze(-1)
    torch.testing.assert_close(out["nll"], nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["kl"], kl_divergence(logp[:1], logp), rtol=1e-5, atol=1e-5)


def test_score_runs_and_evaluate_on_gpu_equal_reference():
    model = tiny_model("gemma3")
    model.hf_model.cuda()
    assert model.device.type == "cuda"
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint="resid_post.1"), seed=1).cuda()
    ctx = saekit.contexts(model, TEXTS, context_len=24, n_tokens=96)
    ids, mask = ctx.input_ids[:4], ctx.attention_mask[:4]
    splice, zero = Splice(sae, error_term=False), {"resid_post.1": _zero_at(model._keep(ids, mask))}
    out = model.score_runs(ids, [splice, zero], mask, reads=["resid_post.1"])
    ref = model.compare(ids.cuda(), splice, mask.cuda(), tokens=range(model.vocab_size), top=0)
    score = mask[:, 1:].bool()
    close = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["nll"][0].cpu()[score].float(), ref["nll_clean"].cpu()[score], **close)
    torch.testing.assert_close(out["nll"][1].cpu()[score].float(), ref["nll_edited"].cpu()[score], **close)
    kl_ref = kl_divergence(ref["logp_clean"][:, :-1], ref["logp_edited"][:, :-1]).cpu()
    torch.testing.assert_close(out["kl"][1].cpu()[score].float(), kl_ref[score], **close)
    kw = dict(n_tokens=200, context_len=24, batch_size=3, progress=False)
    fast = saekit.evaluate(model, sae, TEXTS, **kw).to_dict()
    slow = saekit.evaluate(model, sae, TEXTS, reference=True, **kw).to_dict()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], rel=1e-3, abs=1e-4), key


def test_fire_counts_on_gpu_equal_bincount():
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 300, (256, 8), generator=g).cuda()
    acts = torch.randn(256, 8, generator=g).relu().cuda()
    torch.testing.assert_close(fire_counts(acts, idx, 300), torch.bincount(idx[acts > 0], minlength=300))


def test_short_training_on_gpu_matches_cpu():
    """The same TopK run on CUDA (bf16 autocast) and on the CPU (fp32) ends at nearly the same FVU."""
    g = torch.Generator().manual_seed(3)
    dirs = torch.nn.functional.normalize(torch.randn(256, 64, generator=g), dim=-1)
    codes = torch.rand(16384, 256, generator=g) * (torch.rand(16384, 256, generator=g) < 0.03)
    x = codes @ dirs + 0.01 * torch.randn(16384, 64, generator=g)
    fvus = {}
    for device in ("cpu", "cuda"):
        sae = Sae(SaeConfig(d_in=64, n_latents=512, k=8), seed=0)
        tr = Trainer(sae, TrainConfig(tokens=40 * 1024, batch_size=1024, log_every=10, device=device))
        tr.fit(x, progress=False)
        assert sae.W_dec.dtype == torch.float32 and sae.W_dec.device.type == device
        fvus[device] = tr.history[-1]["saes"][0]["fvu"]
    assert fvus["cpu"] < 0.5 * tr.history[0]["saes"][0]["fvu"]
    assert fvus["cuda"] == pytest.approx(fvus["cpu"], abs=0.02)


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "gated"])
def test_training_steps_on_gpu_never_wait_for_the_host(arch, monkeypatch):
    """Between the trainer's host reads (`TrainConfig.sync_every`) a step (forward, backward, fused Adam, the
    dead-latent and density bookkeeping) only queues kernels: CUDA's sync debug mode turns any synchronisation
    into an error. AuxK is active (latents silent for two batches count as dead)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1024 * 12, 64, generator=g)
    kw = dict(k=8) if arch == "topk" else dict(target_l0=8)
    sae = Sae(SaeConfig(d_in=64, n_latents=2048, architecture=arch, **kw), seed=0)
    cfg = TrainConfig(tokens=1024 * 12, batch_size=1024, log_every=1000, dead_tokens=2048, sync_every=1000, device="cuda")
    trainer = Trainer(sae, cfg)
    orig_opt, orig_track = Trainer._optimise, Trainer._track
    steps = []

    def step(self, slot, batch, factor):
        if self.step == 0:  # the first step's dead set is read at its start
            return orig_opt(self, slot, batch, factor)
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = orig_opt(self, slot, batch, factor)
            orig_track(self, slot, out, batch[self.input_key])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        steps.append(self.step)
        return out

    def track(self, slot, out, x_BD):
        if self.step == 0:
            orig_track(self, slot, out, x_BD)

    monkeypatch.setattr(Trainer, "_optimise", step)
    monkeypatch.setattr(Trainer, "_track", track)
    trainer.fit(x, progress=False)
    assert steps == list(range(1, 12))
