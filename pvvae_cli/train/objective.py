"""The predictive reconstruction objective (PV-VAE §3.1): encode a clip's beginning, decode all of it.

A clip of ``T = 1 + tc*n`` frames (``tc``: the model's temporal factor, 4 for t4 models) is split into
``G = 1 + n`` groups, one per latent frame: group 0 is the first frame, each later group ``tc`` frames.
``k ~ Uniform{0, ..., floor((G - 1) * r)}`` trailing groups are dropped (``r`` = max drop ratio; the first frame
is always kept, ``k = 0`` keeps everything), the kept prefix ``1 + tc*(n - k)`` frames is encoded to ``G - k``
latent frames, ``k`` padding latents are appended, and the decoder reconstructs the
whole clip; the loss covers every frame (observed and predicted).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from pvvae_cli.frames import latent_frame_count, pixel_frame_count
from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.models.pvvae.config import VAEConfig


def num_groups(num_frames: int, temporal_compression: int = VAEConfig.temporal_compression) -> int:
    """``G = 1 + (T - 1) / tc`` for a clip of ``T = 1 + tc*n`` frames (its latent frame count)."""
    return latent_frame_count(num_frames, temporal_compression)


def max_dropped(groups: int, max_drop_ratio: float) -> int:
    """The largest ``k`` allowed: ``floor((G - 1) * r)``."""
    if not 0.0 <= max_drop_ratio <= 1.0:
        raise ValueError(f"max drop ratio must be in [0, 1], got {max_drop_ratio}")
    # The small epsilon keeps exact products (4 * 0.75 = 3) from flooring to 2 through rounding error.
    return int(math.floor((groups - 1) * max_drop_ratio + 1e-9))


def sample_num_dropped(groups: int, max_drop_ratio: float, rng: random.Random) -> int:
    """Draw ``k ~ Uniform{0, ..., floor((G - 1) * r)}`` with ``rng`` (shared by all ranks: same k everywhere)."""
    return rng.randint(0, max_dropped(groups, max_drop_ratio))


def kept_frames(
    num_frames: int, dropped: int, temporal_compression: int = VAEConfig.temporal_compression
) -> int:
    """Frames of the observed prefix when ``dropped`` trailing groups are dropped: ``1 + tc*(G - 1 - k)``."""
    groups = num_groups(num_frames, temporal_compression)
    if not 0 <= dropped <= groups - 1:
        raise ValueError(f"can drop 0..{groups - 1} groups of a {num_frames}-frame clip, got {dropped}")
    return pixel_frame_count(groups - dropped, temporal_compression)


@dataclass
class PredictiveOutput:
    """``recon``: ``(B, 3, T, H, W)`` decoded full clip; ``posterior`` over the kept prefix's latents;
    ``dropped``: k; ``kept``: observed frames."""

    recon: torch.Tensor
    posterior: DiagonalGaussian
    dropped: int
    kept: int


def predictive_forward(
    vae,
    x: torch.Tensor,
    dropped: int,
    padding: str | None = None,
    sample: bool = True,
    generator: torch.Generator | None = None,
    encoder_grad: bool = True,
) -> PredictiveOutput:
    """Encode ``x[:, :, :kept]``, append ``dropped`` padding latents, decode the full clip.

    ``x``: ``(B, 3, T, H, W)`` in [-1, 1]. ``vae``: a ``VideoVAE`` (not a DDP wrapper: call through the
    wrapper's ``module`` with the wrapper's forward hooks handled by the caller). ``padding``: ``learnable`` or
    ``gaussian`` (default: the model's). ``sample``: draw z from the posterior (training) or take its mean.
    ``encoder_grad=False`` runs the encoder without autograd (decoder fine-tuning).
    """
    tc = vae.config.temporal_compression
    kept = kept_frames(x.shape[2], dropped, tc)
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        posterior = vae.encode(x[:, :, :kept])
    # Sampled outside the block (the same values and gradients: without encoder_grad the posterior has none). Under
    # --compile, drawing with an explicit generator breaks the graph, and a break inside a grad-mode block would
    # send the whole forward back to eager; here it splits it cleanly into an encoder and a decoder graph.
    z = posterior.sample(generator) if sample else posterior.mode()
    z = vae.pad_latents(z, dropped, mode=padding, generator=generator)  # (B, C, G, h, w)
    recon = vae.decode(z)
    return PredictiveOutput(recon, posterior, dropped, kept)


class PredictiveVAE(torch.nn.Module):
    """A ``VideoVAE`` whose ``forward`` is the predictive objective's forward pass.

    This is the module DistributedDataParallel wraps: DDP hooks run on ``forward``, so the whole
    encode-pad-decode must happen inside one ``forward`` call. Parameters are the wrapped model's
    (state-dict keys prefixed with ``vae.``; use ``.vae`` to save or export)."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, dropped: int, padding: str | None = None, sample: bool = True,
                generator: torch.Generator | None = None, encoder_grad: bool = True) -> PredictiveOutput:
        out = predictive_forward(self.vae, x, dropped, padding, sample, generator, encoder_grad)
        token = self.vae.padding_token
        if token is not None and token.requires_grad and (dropped == 0 or padding == "gaussian"):
            # Tie the unused padding token into the graph with a zero-valued term so DDP sees a gradient
            # (zero) for every parameter on every step instead of waiting for one that never comes.
            out.recon = out.recon + 0.0 * token.sum()
        return out
