"""``CausalConvAutoencoder``: what every family built from an ``encoder(x, state)`` / ``decoder(z, state)`` pair of
causal, streamable modules has in common (PV-VAE and IV-VAE): the protocol methods of ``models.protocol`` (checks,
one-pass and chunked coding, latent normalisation), the predictive padding token, weights and presets.

A family subclasses it and sets ``presets`` (its presets registry), builds ``self.encoder`` / ``self.decoder`` in
``__init__`` (then ``self._init_padding_token()`` and its own ``initialize_weights()``). The encoder returns the
posterior moments ``(B, 2C, t, h, w)`` (mean, log-variance); both modules take an optional ``StreamState``. A
family with more around them (Wan: patchify, quant convs) overrides ``_moments`` / ``_pixels``.

Layouts and ranges (``tc``, ``s``: the config's ``temporal_compression`` and ``spatial_compression``): pixels
``(B, 3, 1+tc*k, H, W)`` in [-1, 1] with ``H, W`` multiples of ``s``; latents ``(B, C, 1+k, H/s, W/s)``, raw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from pvvae_cli.frames import check_frame_count
from pvvae_cli.models import latent_space, weights
from pvvae_cli.models.causal_conv import StreamState
from pvvae_cli.models.checkpointing import set_grad_checkpointing
from pvvae_cli.models.posterior import DiagonalGaussian


class CausalConvAutoencoder(nn.Module):
    """Base of the causal conv families; see the module docstring."""

    presets: ClassVar[dict[str, Any]] = {}  # the family's presets registry: name -> config
    config: Any
    encoder: nn.Module
    decoder: nn.Module

    def _init_padding_token(self) -> None:
        # One token per channel, shared by every padded position; zero is the prior's mean.
        if self.config.padding_mode == "learnable":
            self.padding_token = nn.Parameter(torch.zeros(self.config.latent_channels))
        else:
            self.padding_token = None

    # ------------------------------------------------------------------ construction and weights
    @classmethod
    def from_preset(cls, name: str, **overrides):
        """A randomly initialised model of one of the family's presets."""
        if name not in cls.presets:
            raise ValueError(f"unknown preset {name!r} for {cls.__name__}; choose one of {sorted(cls.presets)}")
        config = cls.presets[name]
        return cls(config.replace(**overrides) if overrides else config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, revision: str | None = None,
                        device: str | torch.device = "cpu"):
        """Load from a weights folder (``config.json`` + ``model.safetensors``) or a Hugging Face repo id."""
        return weights.load_pretrained(name_or_path, revision=revision, device=device, expect=cls)

    def save_pretrained(self, directory: str | Path, model_card: str | None = None, dtype: torch.dtype | None = None,
                        release: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ ``README.md`` if ``model_card``) to ``directory``;
        ``dtype`` stores the weights at that precision, ``release`` names a published model (name, version)."""
        return weights.save_pretrained(self, directory, model_card=model_card, dtype=dtype, release=release)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ training (protocol.TrainableAutoencoder)
    def encoder_parameters(self):
        """What the decoder-only stage freezes."""
        return self.encoder.parameters()

    def last_decoder_weight(self) -> torch.Tensor:
        """The weight the adaptive GAN loss weight is measured on: the decoder's output conv."""
        return self.decoder.conv_out.weight

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Activation checkpointing of the whole-clip training pass, block by block (``models.checkpointing``);
        the family's encoder and decoder decide what a block is. Off by default; streaming is never affected."""
        if not set_grad_checkpointing(self, enabled):
            raise NotImplementedError(f"{type(self).__name__} has no checkpointed blocks")

    # ------------------------------------------------------------------ shape checks
    def check_pixels(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, 3, 1+tc*k, H, W)`` with H, W multiples of the spatial factor."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"pixels must be (B, {cfg.in_channels}, T, H, W), got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        check_frame_count(t, cfg.temporal_compression)
        s = cfg.spatial_compression
        if h % s or w % s:
            raise ValueError(f"height and width must be multiples of {s}, got {h}x{w}; pad or resize first")

    def check_latents(self, z: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``z`` is ``(B, latent_channels, t, h, w)``."""
        c = self.config.latent_channels
        if z.ndim != 5 or z.shape[1] != c:
            raise ValueError(f"latents must be (B, {c}, t, h, w) for this model, got shape {tuple(z.shape)}")

    # ------------------------------------------------------------------ one-pass inference
    def _moments(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        """Pixels (a whole clip, or the next chunk of ``state``'s) -> posterior moments ``(B, 2C, t, h, w)``."""
        return self.encoder(x, state)

    def _pixels(self, z: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        """Latents (a whole clip's, or the next chunk of ``state``'s) -> pixels, not clamped."""
        return self.decoder(z, state)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """``x``: ``(B, 3, 1+tc*k, H, W)`` in [-1, 1] -> posterior over ``(B, C, 1+k, H/s, W/s)``."""
        self.check_pixels(x)
        return DiagonalGaussian.from_moments(self._moments(x, None))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(B, C, 1+k, h, w)`` -> pixels ``(B, 3, 1+tc*k, s*h, s*w)``, nominally in [-1, 1] (not clamped)."""
        self.check_latents(z)
        return self._pixels(z, None)

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    # ------------------------------------------------------------------ streaming (chunked) inference
    # The one streaming implementation: the codec, tiling and the chunked helpers below all go through it.
    def new_stream(self) -> StreamState:
        """A fresh cache for one direction (encode or decode) of one clip or tile; see ``models.protocol``."""
        return StreamState()

    def encode_chunk(self, x: torch.Tensor, stream: StreamState) -> DiagonalGaussian:
        """The next chunk ``(B, 3, n, H, W)`` in [-1, 1] of ``stream``'s clip: ``n = 1`` for the first chunk (the
        first frame is encoded alone), then a multiple of ``tc``. Returns the posterior of its latent frames
        (1, then ``n / tc``); concatenated along time they equal ``encode`` of the whole clip."""
        tc = self.config.temporal_compression
        first = not stream.has_started(self)
        n = x.shape[2] if x.ndim == 5 else -1
        if first and n != 1:
            raise ValueError(f"the first chunk of a stream must hold 1 frame, got shape {tuple(x.shape)}")
        if not first and (n < 1 or n % tc):
            raise ValueError(f"chunks after the first must hold a multiple of {tc} frames, got shape {tuple(x.shape)}")
        self.check_pixels(x[:, :, :1])
        stream.first_call(self)  # marks the stream as started
        return DiagonalGaussian.from_moments(self._moments(x, stream))

    def decode_chunk(self, z: torch.Tensor, stream: StreamState) -> torch.Tensor:
        """The next latent chunk ``(B, C, n, h, w)`` (any ``n >= 1``) of ``stream``'s clip -> its pixels (the first
        latent frame gives 1 frame, each later one ``tc``), not clamped; concatenated they equal ``decode``."""
        self.check_latents(z)
        return self._pixels(z, stream)

    def encode_chunked(self, x: torch.Tensor, chunk_latents: int = 1) -> DiagonalGaussian:
        """``encode`` through ``encode_chunk``, ``chunk_latents`` latent frames at a time (same result, bounded
        memory)."""
        self.check_pixels(x)
        step = self.config.temporal_compression * chunk_latents
        stream = self.new_stream()
        parts = [self.encode_chunk(x[:, :, :1], stream)]
        parts += [self.encode_chunk(x[:, :, i : i + step], stream) for i in range(1, x.shape[2], step)]
        return DiagonalGaussian(torch.cat([p.mean for p in parts], 2), torch.cat([p.logvar for p in parts], 2))

    def decode_chunked(self, z: torch.Tensor, chunk_latents: int = 1) -> torch.Tensor:
        """``decode`` through ``decode_chunk``, ``chunk_latents`` latent frames at a time (same result, bounded
        memory)."""
        self.check_latents(z)
        stream = self.new_stream()
        parts = [self.decode_chunk(z[:, :, i : i + chunk_latents], stream) for i in range(0, z.shape[2], chunk_latents)]
        return torch.cat(parts, dim=2)

    # ------------------------------------------------------------------ latent space
    def pad_latents(self, z: torch.Tensor, num_frames: int, mode: str | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``num_frames`` padding latent frames to ``z`` ``(B, C, t, h, w)`` along time: ``learnable`` (the
        model's padding token) or ``gaussian`` (N(0, I) samples); default: the config's ``padding_mode``."""
        return latent_space.pad_latents(z, num_frames, mode or self.config.padding_mode, self.padding_token,
                                        generator)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> per-channel standardised ones (identity if the config has no statistics)."""
        return latent_space.normalize_latents(self.config, z)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalize_latents``."""
        return latent_space.denormalize_latents(self.config, z)
