"""Training SAEs on harvested activations: `train` for one call, `Trainer` for control.

    trainer.py      the loop and the step (optimiser, schedule, AuxK dead-latent tracking, several SAEs per pass)
    checkpoint.py   the checkpoint folder: what it holds, the crash-safe write, exact resume
    distributed.py  data parallelism: process group, device, and the collectives the step uses
"""

from __future__ import annotations

from ..errors import TrainingError
from .checkpoint import STATE_JSON, STATE_TENSORS, find_checkpoint, remove_checkpoint
from .distributed import init_distributed, pick_device, world
from .trainer import INPUT, SAMPLE_ROWS, Trainer, fire_counts, input_scale, lr_factor, train

__all__ = [
    "INPUT",
    "SAMPLE_ROWS",
    "STATE_JSON",
    "STATE_TENSORS",
    "Trainer",
    "TrainingError",
    "find_checkpoint",
    "fire_counts",
    "init_distributed",
    "input_scale",
    "lr_factor",
    "pick_device",
    "remove_checkpoint",
    "train",
    "world",
]
