"""An optional Weights & Biases callback for `Trainer`: logs each history entry (per SAE: loss, FVU, L0,
dead fraction and the latent-density histogram). wandb is imported when the logger is created, never
by saekit itself, and is not a dependency (`pip install saekit[wandb]`).

    trainer = Trainer(saes, cfg, callbacks=[WandbLogger(project="saes", name="l6-sweep")])
"""

from __future__ import annotations

from typing import Any


class WandbLogger:
    """Callable `Trainer` callback; `run_kwargs` go to `wandb.init` (project, name, config, mode...)."""

    def __init__(self, **run_kwargs: Any) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("WandbLogger needs wandb: pip install wandb (or saekit[wandb])") from e
        self._wandb = wandb
        self.run = wandb.init(**run_kwargs) if wandb.run is None else wandb.run

    def __call__(self, entry: dict[str, Any]) -> None:
        wandb = self._wandb
        data: dict[str, Any] = {"lr": entry["lr"], "tokens": entry["tokens"], "tokens_per_s": entry["tokens_per_s"]}
        for i, sae in enumerate(entry["saes"]):
            prefix = f"sae_{i}_{sae.get('architecture', '')}_{sae['n_latents']}"
            for key, value in sae.items():
                if isinstance(value, (int, float)) and key != "n_latents":
                    data[f"{prefix}/{key}"] = value
            hist = sae.get("density_histogram")
            if hist is not None:
                data[f"{prefix}/log10_density"] = wandb.Histogram(np_histogram=(hist["counts"], hist["edges"]))
                data[f"{prefix}/never_fired_in_window"] = hist["dead"]
        self.run.log(data, step=entry["step"])

    def finish(self) -> None:
        self.run.finish()


__all__ = ["WandbLogger"]
