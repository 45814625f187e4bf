"""The training loop around the family: several SAEs from one pass (cache and ShuffleBuffer), live metrics
with the latent-density histogram, the optional W&B logger, the GPU path, and short real-model runs of
every architecture on the default model (one shared harvest)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import saekit
from saekit import ActivationCache, Sae, SaeConfig, ShuffleBuffer, TrainConfig, Trainer
from saekit.metrics import fvu as fvu_of, l0 as l0_of

D = 16


def toy(n: int = 4096, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.rand(n, 48, generator=g).lt(0.08) * torch.rand(n, 48, generator=g)
    return codes @ torch.randn(48, D, generator=g) + 1.0


def test_four_widths_from_one_pass_over_the_cache(tmp_path):
    """Four SAEs of different widths train together; each matches the same SAE trained alone."""
    x = toy()
    cache = ActivationCache.create(tmp_path / "c", ["h"], {"h": D}, {"model": "toy"})
    cache.append({"h": x}, {}, contexts_done=1)
    cfg = TrainConfig(tokens=8 * 512, batch_size=512, log_every=4)
    widths = (32, 64, 128, 256)
    saes = [Sae(SaeConfig(d_in=D, n_latents=w, k=4), seed=i) for i, w in enumerate(widths)]
    together = Trainer(saes, cfg).fit(ActivationCache.open(cache.path), "h", progress=False)
    assert [s["n_latents"] for s in together.history[-1]["saes"]] == list(widths)
    alone = Trainer(Sae(SaeConfig(d_in=D, n_latents=128, k=4), seed=2), cfg).fit(ActivationCache.open(cache.path), "h", progress=False)
    for name, p in alone.sae.state_dict().items():
        torch.testing.assert_close(p, saes[2].state_dict()[name], msg=name)
    paths = together.save(tmp_path / "out", names=[f"w{w}" for w in widths])
    assert [Sae.load(p).n_latents for p in paths] == list(widths)


def test_four_k_values_from_a_shuffle_buffer():
    """Different k from one streamed pass: each SAE's L0 is its k and wider codes reconstruct better."""
    x = toy(8192)
    stream = ShuffleBuffer((x[i : i + 1000] for i in range(0, len(x), 1000)), capacity=2048, batch_size=256, seed=0)
    saes = [Sae(SaeConfig(d_in=D, n_latents=64, k=k)) for k in (1, 2, 4, 8)]
    tr = Trainer(saes, TrainConfig(tokens=24 * 256, batch_size=256, log_every=6)).fit(stream, progress=False)
    last = tr.history[-1]["saes"]
    for s, k in zip(last, (1, 2, 4, 8)):
        assert 0.9 * k <= s["l0"] <= k
    assert last[0]["fvu"] > last[1]["fvu"] > last[2]["fvu"] > last[3]["fvu"]


def test_history_carries_metrics_and_the_density_histogram():
    """Every log_every steps: loss, L0, FVU, dead fraction and a density histogram counting every latent."""
    saes = [Sae(SaeConfig(d_in=D, n_latents=64, k=4)), Sae(SaeConfig(d_in=D, n_latents=64, architecture="jumprelu", target_l0=4))]
    seen = []
    tr = Trainer(saes, TrainConfig(tokens=12 * 256, batch_size=256, log_every=3), callbacks=[seen.append])
    tr.fit(toy(), progress=False)
    assert [h["step"] for h in tr.history] == [3, 6, 9, 12] and seen == tr.history
    for entry in tr.history:
        for s in entry["saes"]:
            assert {"loss", "fvu", "l0", "dead_fraction", "aux_loss", "density_histogram", "architecture"} <= set(s)
            h = s["density_histogram"]
            assert len(h["counts"]) == len(h["edges"]) - 1 == tr.cfg.histogram_bins
            assert sum(h["counts"]) + h["dead"] == 64  # each latent counted once
    s = tr.history[-1]["saes"][0]
    assert 0 < s["l0"] <= 4 and s["density_histogram"]["dead"] < 64


def test_wandb_logger_logs_plain_entries(monkeypatch):
    """The W&B callback imports wandb lazily and logs per-SAE scalars plus the density histogram."""
    logged = []

    class Run:
        def log(self, data, step):
            logged.append((step, data))

        def finish(self):
            pass

    fake = types.SimpleNamespace(run=None, init=lambda **kw: Run(), Histogram=lambda np_histogram: ("hist", np_histogram))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    from saekit.wandb_logger import WandbLogger

    tr = Trainer(Sae(SaeConfig(d_in=D, n_latents=32, k=2)), TrainConfig(tokens=4 * 256, batch_size=256, log_every=2),
                 callbacks=[WandbLogger(project="test")])
    tr.fit(toy(), progress=False)
    assert [s for s, _ in logged] == [2, 4]
    data = logged[-1][1]
    assert data["sae_0_topk_32/l0"] == 2.0 and "sae_0_topk_32/fvu" in data
    assert data["sae_0_topk_32/log10_density"][0] == "hist"


def test_wandb_is_never_required():
    """Importing saekit does not import wandb."""
    assert "wandb" not in sys.modules or isinstance(sys.modules["wandb"], types.ModuleType)
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import saekit, sys; print('wandb' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast_training():
    """On CUDA the trainer runs under bf16 autocast, keeps float32 weights and lowers FVU for every architecture."""
    x = toy(8192).cuda()
    cfgs = [SaeConfig(d_in=D, n_latents=64, k=4, architecture=a, **kw) for a, kw in
            (("topk", {}), ("batchtopk", {}), ("matryoshka", {"matryoshka_prefixes": (16,)}),
             ("jumprelu", {"target_l0": 4}), ("relu", {"l1_coefficient": 0.5}), ("gated", {}))]
    tr = Trainer([Sae(c) for c in cfgs], TrainConfig(tokens=30 * 512, batch_size=512, log_every=5, device="cuda"))
    tr.fit(x, progress=False)
    for s, first, last in zip(tr.saes, tr.history[0]["saes"], tr.history[-1]["saes"]):
        assert s.W_dec.device.type == "cuda" and s.W_dec.dtype == torch.float32
        assert last["fvu"] < first["fvu"], s.architecture


# -- real model -----------------------------------------------------------------------------------

HOOKS = ("resid_post.6", "mlp_in.6", "mlp_out.6")
TRAIN_ROWS, HELD_ROWS = 16_384, 4_096
REAL_CFG = dict(tokens=3 * TRAIN_ROWS, batch_size=1024, log_every=4, seed=0)
N_LATENTS, K = 1024, 32


@pytest.fixture(scope="module")
def real_acts(real_model, tmp_path_factory):
    """One 20k-token harvest of three hook points at layer 6, shared by every real-model test here."""
    cache = saekit.harvest(real_model, hookpoints=list(HOOKS), n_tokens=TRAIN_ROWS + HELD_ROWS,
                           out=tmp_path_factory.mktemp("family") / "acts", progress=False)
    acts = {h: cache.load(h).float() for h in HOOKS}
    train = ActivationCache(list(HOOKS), {h: acts[h].shape[-1] for h in HOOKS},
                            tensors={h: a[:TRAIN_ROWS] for h, a in acts.items()}, shards=[{"rows": TRAIN_ROWS}])
    held = {h: a[TRAIN_ROWS:] for h, a in acts.items()}
    return train, held


SAE_ARCHS = {
    # architecture: (extra config, (low, high) bounds on held-out L0)
    "topk": ({}, (K, K)),
    "batchtopk": ({}, (K / 2, 2 * K)),
    "matryoshka": ({"matryoshka_prefixes": (64, 256)}, (K / 2, 2 * K)),
    "jumprelu": ({"target_l0": K}, (K / 2, 2 * K)),
    # ReLU/L1 asked for its L0: its fixed default coefficient (5.0, the April update's) gave L0 3.8 and FVU 0.64 here
    # once it started at its target density (saes/relu.py), since lambda's meaning depends on the data
    "relu": ({"target_l0": K}, (K / 2, 2 * K)),
    "gated": ({}, (1, 200)),
}


@pytest.fixture(scope="module")
def real_family(real_acts):
    """All residual-stream architectures trained together from one pass over the same batches."""
    train, _ = real_acts
    cfgs = [SaeConfig(d_in=train.d["resid_post.6"], n_latents=N_LATENTS, k=K, architecture=a, hookpoint="resid_post.6", **kw)
            for a, (kw, _) in SAE_ARCHS.items()]
    tr = Trainer([Sae(c, seed=i) for i, c in enumerate(cfgs)], TrainConfig(**REAL_CFG)).fit(train, "resid_post.6", progress=False)
    tr.fold()
    return tr


@pytest.mark.real_model
@pytest.mark.parametrize("arch", list(SAE_ARCHS))
def test_real_model_training_reaches_target_sparsity_and_low_fvu(arch, real_acts, real_family):
    """On held-out resid_post.6 tokens every architecture explains most variance at its target sparsity."""
    _, held = real_acts
    i = list(SAE_ARCHS).index(arch)
    sae = real_family.saes[i]
    assert sae.architecture == arch
    x = held["resid_post.6"]
    with torch.no_grad():
        latents = sae.encode(x)
        x_hat = sae.decode(latents)
    l0, fvu = l0_of(latents), fvu_of(x, x_hat)
    lo, hi = SAE_ARCHS[arch][1]
    print(f"{arch}: held-out L0 {l0:.1f}, FVU {fvu:.3f}")
    assert lo <= l0 <= hi, l0
    assert fvu < 0.5, fvu
    first, last = real_family.history[0]["saes"][i], real_family.history[-1]["saes"][i]
    assert last["fvu"] < first["fvu"]


@pytest.mark.real_model
@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_real_model_transcoders_predict_the_mlp_output(arch, real_model, real_acts):
    """Transcoders trained on paired mlp_in.6 -> mlp_out.6 rows predict held-out MLP outputs."""
    assert saekit.transcoder_hookpoints(real_model, 6) == ("mlp_in.6", "mlp_out.6")
    train, held = real_acts
    cfg = SaeConfig(d_in=train.d["mlp_in.6"], n_latents=N_LATENTS, k=K, architecture=arch,
                    hookpoint="mlp_in.6", target_hookpoint="mlp_out.6")
    tr = Trainer(Sae(cfg), TrainConfig(**REAL_CFG)).fit(train, "mlp_in.6", progress=False)
    tr.fold()
    with torch.no_grad():
        y_hat = tr.sae.reconstruct(held["mlp_in.6"])
    fvu = fvu_of(held["mlp_out.6"], y_hat)
    print(f"{arch}: held-out FVU {fvu:.3f}")
    assert fvu < 0.7, fvu
