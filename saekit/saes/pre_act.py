"""Anthropic's pre-activation loss (Circuits Updates, January 2025), the dead-latent remedy of every architecture.

    penalty = mean over tokens b and latents i of  relu(theta_i - pre_bi) * ||W_dec_i||  /  (d_in * sigma)

where sigma = sqrt(total variance / (tokens * d_in)) is the batch's per-coordinate standard deviation (around its
mean). Every pre-activation below the code's threshold theta gets a small gradient toward it, so a latent that the
code never selects still learns (the selection, the step function or the ReLU gives it no reconstruction gradient).
The threshold is the architecture's: JumpReLU's per-latent one, TopK's k-th largest pre-activation of each token,
BatchTopK's batch threshold, and 0 for the gate of a Gated SAE and the pre-activation of a ReLU SAE. The decoder
weight is 1 where the decoder rows are unit norm.

Why this normalisation (Anthropic sum over latents and use raw units):
- Width: the mean over latents keeps a latent's pull, relative to its reconstruction gradient (which scales with
  its firing rate, k / n_latents), the same at every dictionary width. With the sum, the coefficient chosen at 1024
  latents cost 0.104 held-out FVU at 4096 (BatchTopK on Gemma 3 270M resid_post.6) where a quarter of it gave 0.086.
- Scale: the gaps are activations and the FVU is a ratio of squared ones, so the penalty is divided by a length
  (d_in * sigma) rather than by the total variance: scaling the data's spread (or its offset, which sets sigma once
  the trainer normalises E||x||^2 to d_in) leaves the balance between the two terms unchanged. Divided by the total
  variance instead, the same coefficient was ~5x stronger on synthetic data with a large offset (sigma 0.058) than
  on Gemma (sigma ~0.27) and made a 128-latent TopK's FVU rise with more tokens (0.164 -> 0.213).
"""

from __future__ import annotations

from torch import Tensor


SAMPLE_ROWS = 512
"""TopK-style codes (sparse otherwise) take the loss on at most this many of a batch's rows: the penalty is a weak,
dense regulariser, and on all 4096 rows of a batch it made a 16384-latent TopK step 3.4x slower."""


def sample_rows(n_rows: int) -> slice:
    """An even sample of at most SAMPLE_ROWS of n_rows rows (the penalty is a mean over rows, so it needs no rescaling)."""
    return slice(None, None, -(-n_rows // SAMPLE_ROWS))  # stride: ceil(n_rows / SAMPLE_ROWS)


def penalty_scale(total_variance: Tensor, n_rows: int, d_in: int) -> Tensor:
    """d_in * sigma = sqrt(d_in * total_variance / n_rows): the length the gaps are measured in (sigma the batch's
    per-coordinate standard deviation; total_variance summed over its n_rows rows)."""
    return (total_variance * d_in / n_rows).sqrt()


def pre_act_penalty(pre_BF: Tensor, theta: Tensor | float, scale: Tensor, weight_F: Tensor | None = None) -> Tensor:
    """mean_b mean_i relu(theta - pre_bi) (* weight_i) / scale (`penalty_scale`). theta is [F] (per latent), [B, 1]
    (per token), a scalar tensor or a float; weight_F (decoder-row norms) is None for unit-norm decoders."""
    gap_BF = (theta - pre_BF).relu()
    if weight_F is not None:
        gap_BF = gap_BF * weight_F
    return gap_BF.mean() / scale


__all__ = ["SAMPLE_ROWS", "penalty_scale", "pre_act_penalty", "sample_rows"]
