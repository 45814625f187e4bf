"""The sweep under data parallelism (what `torchrun --nproc_per_node 2 -m saekit.cli sweep --cache ...` runs):
two gloo processes train the grid on one shared folder, rank 0 alone writes it, and the table matches a
one-process sweep within the data-parallel tolerance of tests/test_ddp.py."""

from __future__ import annotations

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from saekit.config import SweepConfig, TrainConfig
from saekit.store import ActivationCache
from saekit.sweep import run_sweep
from saekit.synthetic import SyntheticDictionary

D_IN = 16


def _data(n: int, seed: int) -> torch.Tensor:
    return SyntheticDictionary(d=D_IN, n_features=128, mean_active=3.0).sample(n, seed=seed).float()


def _sweep(out: str, train: torch.Tensor, held: torch.Tensor):
    cache = ActivationCache(["x"], {"x": D_IN}, tensors={"x": train}, shards=[{"rows": len(train)}])
    cfg = SweepConfig(widths=(32, 64), ks=(4,), tokens=(1024, 4096), eval_tokens=1024)
    return run_sweep(cache, held, cfg=cfg, out=out, train_cfg=TrainConfig(batch_size=256, log_every=4, seed=0), progress=False)


def _worker(rank: int, world: int, port: int, data_path: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train, held = torch.load(data_path, weights_only=True)
        _sweep(out, train, held)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_sweep_matches_one(tmp_path):
    train, held = _data(8192, 0), _data(1024, 9)
    torch.save((train, held), tmp_path / "data.pt")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "data.pt"), str(tmp_path / "ddp")), nprocs=2, join=True)
    rows = {(r["name"], r["tokens"]): r for r in (json.loads(p.read_text()) for p in (tmp_path / "ddp" / "results").glob("*.json"))}
    torch.set_num_threads(1)
    single = _sweep(str(tmp_path / "one"), train, held).table
    assert len(rows) == len(single) == 4, sorted(rows)
    for _, r in single.iterrows():
        d = rows[(r["name"], r["tokens"])]
        assert abs(d["fvu"] - r["fvu"]) < 0.02, (  # measured <= 0.003
            r["name"], r["tokens"], d["fvu"], r["fvu"])
        assert abs(d["l0"] - r["l0"]) < 0.2
    big = single[single.tokens == 4096].set_index("name")["fvu"]
    small = single[single.tokens == 1024].set_index("name")["fvu"]
    assert (big < small).all(), "more tokens, lower FVU: the budgets are read along one run"
