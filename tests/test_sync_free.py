"""The training step's bookkeeping in forms that need no host synchronisation on a GPU equals the
readable forms (the CPU values must not change)."""

import torch

from saekit.train import fire_counts


def test_fire_counts_equal_bincount_of_active_indices():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 300, (512, 16), generator=g)
    acts = torch.randn(512, 16, generator=g).relu()
    assert torch.equal(fire_counts(acts, idx, 300), torch.bincount(idx[acts > 0], minlength=300))
    dense = torch.randn(64, 300, generator=g).relu()
    assert torch.equal(fire_counts(dense, torch.empty(0, dtype=torch.long), 300), (dense > 0).sum(0))
