"""Train one TopK SAE with one library on the shared harvest file; write its weights and timing.

    python benchmarks/peers/train_one.py --trainer saekit --width 16384 --data DATA.pt --out W.pt
    /work/peers-venv/bin/python benchmarks/peers/train_one.py --trainer saelens|saelens_median|dictionary_learning ...

Every trainer gets the same rows (the harvest file's float32 [N, 640] activations of resid_post.6), the
same width, k, batch, learning rate, schedule (linear warm-up over 5 steps, flat, linear decay to 0 over
the last 20%: saekit's default, set through each library's own options) and token budget, and the same
input scaling (E||s x||^2 = d_in, saekit's normalisation; the peers get s x and their weights are
unscaled at export). Only the library's own training code runs: saekit's `Trainer`; SAELens's
`SAETrainer` with `TopKTrainingSAE` (its defaults: zero b_dec, decoder rows at norm 0.1, activations
rescaled by decoder norm; `saelens_median`: b_dec set to the geometric median of the first batch, as
SAELens's pre-v6 `b_dec_init_method='geometric_median'` and dictionary_learning do); dictionary_learning's
`TopKTrainer.update` (its own b_dec median init, grad clipping and decoder renormalisation). `saekit_noclip` is
saekit's Trainer without its default gradient clip (`TrainConfig(max_grad_norm=0)`; the default until 2026-12-07).

The output file holds W_enc [F, D], b_enc [F], W_dec [F, D], b_dec [D] of an equivalent plain TopK SAE
in raw activation units (encode: ReLU(TopK((x - b_dec) W_enc^T + b_enc)), decode: a W_dec + b_dec), and
'seconds' (wall time of the training call), 'tokens', 'peak_rss_mib' of this process.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import torch

K = 32
BATCH = 4096
WARMUP = 5
DECAY_START = 0.8


def lr_for(width: int) -> float:
    """saekit's default learning rate for a width (2e-3 / sqrt(F / 4096)), used by every trainer."""
    return 2e-3 / math.sqrt(width / 4096)


def input_scale(x_ND: torch.Tensor) -> float:
    return math.sqrt(x_ND.shape[1] / float(x_ND[:32768].pow(2).sum(-1).mean()))


def geometric_median(x_ND: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Weiszfeld's iterations (written here, the same estimate the peers' median inits use)."""
    y = x_ND.mean(0)
    for _ in range(iters):
        w = 1 / (x_ND - y).norm(dim=-1).clamp_min(1e-8)
        y_new = (w[:, None] * x_ND).sum(0) / w.sum()
        if (y_new - y).norm() < 1e-6 * y.norm():
            return y_new
        y = y_new
    return y


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started (Linux: /proc/self/status VmHWM, the high-water mark of
    the current address space). `ru_maxrss` is not used where VmHWM exists: Linux carries the forking parent's
    high-water mark across exec into it, so a trainer started by a run.py that had loaded a large cache reported
    the parent's 5.1 GB for every trainer."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(x_ND: torch.Tensor, steps: int, seed: int = 0):
    """The same shuffled batches for every library: a permutation per epoch, full batches only."""
    g = torch.Generator().manual_seed(seed)
    per_epoch = x_ND.shape[0] // BATCH
    n = 0
    while True:
        perm = torch.randperm(x_ND.shape[0], generator=g)
        for b in range(per_epoch):
            if n == steps:
                return
            yield x_ND[perm[b * BATCH : (b + 1) * BATCH]]
            n += 1


def train_saekit(x, width, steps, scale, max_grad_norm=None):
    import saekit
    from saekit.train.trainer import Trainer

    cfg = saekit.TrainConfig(
        tokens=steps * BATCH, batch_size=BATCH, lr=lr_for(width), warmup_steps=WARMUP, decay_start=DECAY_START,
        normalize=False,  # the rows come scaled by s, as for the peers
        max_grad_norm=max_grad_norm,
    )
    sae = saekit.Sae(saekit.SaeConfig(d_in=x.shape[1], n_latents=width, k=K, hookpoint="resid_post.6"))
    trainer = Trainer(sae, cfg)
    t = time.perf_counter()
    trainer.fit((b * scale for b in batches(x, steps)), progress=False)
    seconds = time.perf_counter() - t
    return seconds, {"W_enc": sae.W_enc, "b_enc": sae.b_enc / scale, "W_dec": sae.W_dec, "b_dec": sae.b_dec / scale}


def train_saelens(x, width, steps, scale, median: bool):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=width, k=K))
    lr = lr_for(width)
    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=lr, lr_end=lr,
        lr_warm_up_steps=WARMUP, lr_decay_steps=steps - int(DECAY_START * steps),
    )
    data = (b * scale for b in batches(x, steps))
    t = time.perf_counter()
    if median:
        first = next(batches(x, 1))
        with torch.no_grad():
            sae.b_dec.copy_(geometric_median(first * scale))
    trainer = SAETrainer(cfg, sae, data)
    trainer.fit()
    seconds = time.perf_counter() - t
    sae.fold_W_dec_norm()
    return seconds, {"W_enc": sae.W_enc.t(), "b_enc": sae.b_enc / scale, "W_dec": sae.W_dec, "b_dec": sae.b_dec / scale}


def train_dictionary_learning(x, width, steps, scale):
    from dictionary_learning.trainers.top_k import TopKTrainer

    trainer = TopKTrainer(
        steps=steps, activation_dim=x.shape[1], dict_size=width, k=K, layer=6, lm_name="gemma-3-270m",
        lr=lr_for(width), warmup_steps=WARMUP, decay_start=int(DECAY_START * steps), seed=0, device="cpu",
    )
    t = time.perf_counter()
    for step, b in enumerate(batches(x, steps)):
        trainer.update(step, b * scale)
    seconds = time.perf_counter() - t
    ae = trainer.ae
    return seconds, {"W_enc": ae.encoder.weight, "b_enc": ae.encoder.bias / scale, "W_dec": ae.decoder.weight.t(), "b_dec": ae.b_dec / scale}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trainer", required=True, choices=["saekit", "saekit_noclip", "saelens", "saelens_median", "dictionary_learning"])
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--tokens", type=int, default=196_608)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.load(a.data)["train"].float()
    steps = a.tokens // BATCH
    scale = input_scale(x)
    if a.trainer == "saekit":
        seconds, w = train_saekit(x, a.width, steps, scale)
    elif a.trainer == "saekit_noclip":
        seconds, w = train_saekit(x, a.width, steps, scale, max_grad_norm=0.0)
    elif a.trainer.startswith("saelens"):
        seconds, w = train_saelens(x, a.width, steps, scale, median=a.trainer == "saelens_median")
    else:
        seconds, w = train_dictionary_learning(x, a.width, steps, scale)
    w = {k: v.detach().float().contiguous().clone() for k, v in w.items()}
    rss = peak_rss_mib()
    torch.save(w, a.out)
    print(json.dumps({"trainer": a.trainer, "width": a.width, "seconds": seconds, "tokens": steps * BATCH, "peak_rss_mib": rss}))


if __name__ == "__main__":
    main()
