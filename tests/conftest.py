"""Shared fixtures: tiny random models (fast, no download) and the real default model (session-wide)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def real_model():
    """Gemma 3 270M from the offline registry package (converted once into the saekit cache)."""
    import saekit

    return saekit.load_model()


@pytest.fixture(scope="session")
def real_cache(real_model, tmp_path_factory):
    """20k training tokens of resid_post.6 activations, harvested once per test session."""
    import saekit

    out = tmp_path_factory.mktemp("acts") / "resid_post.6"
    return saekit.harvest(real_model, hookpoints="resid_post.6", n_tokens=20_480, out=out, progress=False)


@pytest.fixture(scope="session")
def real_sae(real_cache):
    """A TopK SAE (1024 latents, k 16) trained on `real_cache` for 60k tokens, shared by the real-model tests."""
    import saekit

    return saekit.train(real_cache, n_latents=1024, k=16, cfg=saekit.TrainConfig(tokens=60_000, batch_size=2048), progress=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
