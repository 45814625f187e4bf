"""Train a grid of SAEs (widths x k) from one activation cache, read every run at several token budgets,
and collect a results table; a rerun of a half-done sweep continues where it stopped.

    res = run_sweep(cache, eval_acts, SweepConfig(widths=(256, 512, 1024), ks=(16, 32)), out="runs/sweep")
    res.table                 # pandas: name, n_latents, k, tokens, fvu, l0, dead_fraction (+ ce_loss_recovered)

How: the grid is cut into passes of `SweepConfig.per_pass` SAEs (all at once by default), each trained by
one `saekit.Trainer` (several SAEs share each batch) to the largest token budget. The smaller budgets are
read on the way: the trainer is fed the first b batches of the cache's seeded order, stops, is evaluated
(and saved) and fed on. So a budget below the largest is that run's checkpoint, not a run trained for that
budget: its learning rate had not decayed yet, which overstates its loss a little (Chinchilla's caveat);
pass a single budget and several sweeps when that matters.

On disk (`out`): sweep.json (the grid, training and SAE settings; a rerun with other settings is refused),
pass_<i>/checkpoint (the trainer's exact-resume checkpoint), saes/<name>_t<tokens>/ (each run's SAE at
each budget, raw activation units) and results/<name>_t<tokens>.json (its row). A rerun skips rows already
written and resumes each pass from its checkpoint.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from .. import durable
from ..config import SaeConfig, SweepConfig, TrainConfig
from ..errors import ConfigError, TrainingError
from ..saes import Sae
from ..store import ActivationCache
from ..train import Trainer, find_checkpoint, world

SWEEP_JSON = "sweep.json"
RESULTS = "results"
SAES = "saes"


def run_name(width: int, k: int) -> str:
    """A run's name in the grid: 'w1024_k32'."""
    return f"w{width}_k{k}"


@dataclass
class SweepResult:
    """What `run_sweep` returns: the results table and where the SAEs are."""

    table: Any
    """pandas DataFrame, one row per (run, budget): name, n_latents, k, tokens, fvu, l0, dead_fraction,
    ce_loss_recovered (NaN where not evaluated), path."""

    out: Path
    """The sweep folder."""

    def sae(self, n_latents: int, k: int | None = None, tokens: int | None = None) -> Sae:
        """Load one run's SAE (the only k and the largest budget when not given)."""
        t = self.table
        rows = t[(t.n_latents == n_latents) & ((t.k == k) if k is not None else True)]
        if tokens is not None:
            rows = rows[rows.tokens == tokens]
        if rows.empty:
            raise ConfigError(f"no run with n_latents={n_latents}, k={k}, tokens={tokens} in this sweep")
        return Sae.load(rows.sort_values("tokens").iloc[-1]["path"])


class _Prefix:
    """The first `n_batches` global batches of the cache's seeded order, as a re-iterable stream.

    The trainer skips the batches it already used when it is fed a stream again, so feeding prefixes of
    growing length continues one run exactly as one long stream would."""

    def __init__(self, cache: ActivationCache, hookpoint: str, batch_size: int, seed: int, n_batches: int) -> None:
        self.cache, self.hookpoint, self.batch_size, self.seed, self.n_batches = cache, hookpoint, batch_size, seed, n_batches

    def __iter__(self) -> Iterator[Tensor]:
        it = self.cache.batches(self.hookpoint, self.batch_size, seed=self.seed, epochs=None)
        for _ in range(self.n_batches):
            yield next(it)


def _settings(cfg: SweepConfig, train_cfg: TrainConfig, sae_cfg: SaeConfig, hookpoint: str, n_cache: int) -> dict[str, Any]:
    t = train_cfg.to_dict()
    t.pop("device", None)
    t.pop("checkpoint_every", None)
    s = sae_cfg.to_dict()
    for k in ("n_latents", "k", "target_l0"):
        s.pop(k, None)
    return {"sweep": cfg.to_dict(), "train": t, "sae": s, "hookpoint": hookpoint, "cache_tokens": n_cache}


def _norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@torch.no_grad()
def measure(sae: Sae, acts_ND: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """FVU, L0 and dead fraction (latents that never fire on these rows) of an SAE in raw units."""
    x = acts_ND.float().to(sae.device)
    err = 0.0
    l0_sum = 0.0
    fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=sae.device)
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        z = sae.encode(xb)
        err += float((sae.decode(z) - xb).pow(2).sum())
        l0_sum += float((z != 0).sum())
        fired |= (z != 0).any(0)
    total = float((x - x.mean(0)).pow(2).sum().clamp_min(1e-12))
    return {"fvu": err / total, "l0": l0_sum / x.shape[0], "dead_fraction": float((~fired).float().mean())}


def run_sweep(
    cache: ActivationCache,
    eval_acts: Tensor | ActivationCache,
    cfg: SweepConfig | None = None,
    *,
    out: str | Path,
    train_cfg: TrainConfig | None = None,
    sae_cfg: SaeConfig | None = None,
    hookpoint: str | None = None,
    model: Any = None,
    progress: bool = True,
) -> SweepResult:
    """Train the grid on `cache`, evaluate every run at every budget on `eval_acts` (held-out rows [N, D] or a
    cache harvested from the test split), save each SAE and row under `out`; resumes a half-done sweep.

    `train_cfg.tokens` is ignored (the largest budget is used); `sae_cfg` is a template whose n_latents and
    k/target_l0 the grid sets (default: TopK with d_in from the cache). With `model` and `cfg.ce_tokens` > 0,
    CE-loss recovered is measured at the largest budget on the model's held-out text.
    """
    import pandas as pd

    cfg = cfg or SweepConfig()
    if not isinstance(cache, ActivationCache):
        raise ConfigError(f"run_sweep trains from an ActivationCache (saekit.harvest(...)), got {type(cache).__name__}")
    hp = cache.check_hookpoint(hookpoint)
    if isinstance(eval_acts, ActivationCache):
        eval_acts = eval_acts.load(eval_acts.check_hookpoint(hp))
    if not isinstance(eval_acts, Tensor) or eval_acts.dim() != 2 or eval_acts.shape[1] != cache.d[hp]:
        raise ConfigError(f"eval_acts must be held-out activation rows [N, {cache.d[hp]}] of {hp!r} (or their cache)")
    eval_acts = eval_acts[: cfg.eval_tokens]
    base = train_cfg or TrainConfig()
    budget_steps = sorted({-(-t // base.batch_size) for t in cfg.tokens})
    if len(budget_steps) != len(cfg.tokens):
        raise ConfigError(f"token budgets {cfg.tokens} round to the same number of batches of {base.batch_size}: space them further apart")
    train_cfg = TrainConfig(**{**base.to_dict(), "tokens": budget_steps[-1] * base.batch_size})
    if cache.n_tokens < train_cfg.batch_size:
        raise ConfigError(f"the cache holds {cache.n_tokens} tokens, fewer than one batch of {train_cfg.batch_size}")
    template = sae_cfg or SaeConfig(d_in=cache.d[hp], hookpoint=hp, model_name=cache.info.get("model"))
    if template.d_in != cache.d[hp]:
        raise ConfigError(f"sae_cfg.d_in={template.d_in} but the cache's {hp!r} has width {cache.d[hp]}")
    grid = [(w, k) for w in cfg.widths for k in cfg.ks]
    cfgs = {run_name(w, k): SaeConfig(**{**template.to_dict(), "n_latents": w, "k": k, "target_l0": float(k)}) for w, k in grid}

    out = Path(out)
    rank, _ = world()
    settings = _norm(_settings(cfg, train_cfg, template, hp, cache.n_tokens))
    if (out / SWEEP_JSON).exists():
        saved = json.loads((out / SWEEP_JSON).read_text())
        if saved != settings:
            diffs = [k for k in settings if saved.get(k) != settings[k]]
            raise TrainingError(
                f"{out} holds a sweep with other settings (differing: {', '.join(diffs)}): rerun with the same settings "
                f"to resume it, or choose another out folder"
            )
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        durable.write_json(settings, out / SWEEP_JSON)

    names = list(cfgs)
    per = cfg.per_pass or len(names)
    for p, lo in enumerate(range(0, len(names), per)):
        group = names[lo : lo + per]
        _run_pass(p, group, cfgs, cache, hp, eval_acts, budget_steps, train_cfg, out, model, cfg, rank, progress)
    rows = [json.loads(f.read_text()) for f in sorted((out / RESULTS).glob("*.json"))]
    table = pd.DataFrame(rows).sort_values(["n_latents", "k", "tokens"]).reset_index(drop=True)
    return SweepResult(table, out)


def _done(out: Path, name: str, tokens: int) -> bool:
    return (out / RESULTS / f"{name}_t{tokens}.json").exists()


def _has_checkpoint(ckpt: Path) -> bool:
    try:
        find_checkpoint(ckpt)
    except TrainingError:
        return False
    return True


def _run_pass(p, group, cfgs, cache, hp, eval_acts, budget_steps, train_cfg, out, model, cfg, rank, progress) -> None:
    bs = train_cfg.batch_size
    if all(_done(out, n, s * bs) for n in group for s in budget_steps):
        return  # finished runs are skipped
    ckpt = out / f"pass_{p}" / "checkpoint"
    if _has_checkpoint(ckpt):
        trainer = Trainer.resume(ckpt, train_cfg)
        if [s.cfg.n_latents for s in trainer.saes] != [cfgs[n].n_latents for n in group]:
            raise TrainingError(f"{ckpt} holds other SAEs than this pass of the sweep: delete it or choose another out folder")
    else:
        trainer = Trainer([Sae(cfgs[n], seed=train_cfg.seed + i) for i, n in enumerate(group)], train_cfg)
    for steps in budget_steps:
        tokens = steps * bs
        if all(_done(out, n, tokens) for n in group):
            continue
        if trainer.step > steps:
            raise TrainingError(
                f"{ckpt} is past budget {tokens} (step {trainer.step} > {steps}) but that budget's results are missing: "
                f"delete {out / f'pass_{p}'} to train this pass again"
            )
        if trainer.step < steps:
            trainer.fit(_Prefix(cache, hp, bs, train_cfg.seed, steps), checkpoint_dir=ckpt, progress=progress)
        if rank != 0:
            continue
        rows, saes = {}, {}
        for i, name in enumerate(group):
            sae = copy.deepcopy(trainer.saes[i])
            if trainer.scale is not None and trainer.scale != 1.0:
                sae.fold_input_scale_(trainer.scale)
            sae.eval()
            path = out / SAES / f"{name}_t{tokens}"
            sae.save(path)
            saes[name] = sae
            rows[name] = {"name": name, "n_latents": sae.n_latents, "k": cfgs[name].k, "tokens": tokens, "pass": p,
                          "path": str(path), **measure(sae, eval_acts), "ce_loss_recovered": float("nan")}
        if model is not None and cfg.ce_tokens and steps == budget_steps[-1]:
            from ..metrics import evaluate_many  # the pass's SAEs share the clean and zero-ablated runs

            for name, r in evaluate_many(model, saes, n_tokens=cfg.ce_tokens, progress=False).items():
                rows[name]["ce_loss_recovered"] = float(r.ce_loss_recovered)
        (out / RESULTS).mkdir(parents=True, exist_ok=True)
        for name, row in rows.items():  # a kill before this point redoes the evaluation on resume (the SAEs are saved)
            durable.write_json(row, out / RESULTS / f"{name}_t{tokens}.json")


__all__ = ["SweepResult", "measure", "run_name", "run_sweep"]
