"""Training SAEs on harvested activations: `train` for one call, `Trainer` for control.

    trainer.py      the loop and the step (optimiser, schedule, AuxK dead-latent tracking, several SAEs per pass)
    checkpoint.py   the checkpoint folder: what it holds, the crash-safe write, exact resume
    distributed.py  data parallelism: process group, device, and the collectives the step uses
    callbacks.py    the callback interface: log entries and per-latent arrays, throttling, Stop, newly alive latents
    history.py      TrainingHistory: a run's entries as plain data, saved with the run, plotted
    progress.py     the terminal fallback: a tqdm bar / one compact line, and the final figure
"""

from __future__ import annotations

from ..errors import TrainingError
from .checkpoint import STATE_JSON, STATE_TENSORS, find_checkpoint, remove_checkpoint
from .distributed import init_distributed, pick_device, world
from .callbacks import LogArrays, NewlyAlive, TokenContexts, TrainCallback
from .history import HISTORY_JSON, TrainingHistory
from .progress import TerminalProgress, progress_line
from .trainer import INPUT, SAMPLE_ROWS, Trainer, fire_counts, input_scale, lr_factor, train

__all__ = [
    "HISTORY_JSON",
    "LogArrays",
    "NewlyAlive",
    "TerminalProgress",
    "TokenContexts",
    "TrainCallback",
    "TrainingHistory",
    "progress_line",
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
