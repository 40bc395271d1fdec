"""The model protocol: what every autoencoder family implements, and all that the codec and tiling rely on.

Layouts and ranges at this boundary (``tc = config.temporal_compression``, ``s = config.spatial_compression``):

- pixels ``x``: float ``(B, 3, T, H, W)`` in [-1, 1], ``T = 1 + tc*k`` (the rule of ``pvvae_cli.frames``: one
  frame is an image), ``H`` and ``W`` multiples of ``s``;
- latents ``z``: ``(B, C, t, h, w)`` with ``C = config.latent_channels``, ``t = 1 + k``, ``h = H / s``,
  ``w = W / s``; raw, as ``encode`` gives them (``normalize_latents`` maps them to the per-channel standardised
  space that latent files may store; identity when the config has no statistics).

Streaming. A model is causal in time, so a clip can be coded chunk by chunk with memory bounded by one chunk, the
concatenated results equal to the one-pass ``encode``/``decode``:

    stream = model.new_stream()
    posts = [model.encode_chunk(x[:, :, :1], stream)]                  # the first chunk: exactly 1 frame
    posts += [model.encode_chunk(x[:, :, i : i + tc], stream) for i in range(1, T, tc)]  # then multiples of tc

``decode_chunk`` takes any number of latent frames per chunk (the first latent frame gives 1 frame, each later
one ``tc``). A stream is one direction of one clip, or of one spatial tile of it: open a new one for the next
clip, for decoding, and for every tile. Callers treat it as opaque; it is the family's business what it caches
(``StreamState`` from ``causal_conv`` is the shared implementation).

Implementations are ``torch.nn.Module`` s: the codec moves them with ``to``/``eval`` and identifies the weights by
their ``state_dict``. ``VideoVAE`` (``models/pvvae``) is the reference; ``tests/test_protocol.py`` runs a stand-in
of a few lines through the codec. Anything else a family offers (PV-VAE's ``pad_latents``, its ``encoder``
module) is family-specific: code that must work for every family uses only what is declared here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from pvvae_cli.models.posterior import DiagonalGaussian


@runtime_checkable
class AutoencoderConfig(Protocol):
    """The part of a family's frozen config dataclass that family-independent code reads."""

    temporal_compression: int  # tc: 1 + tc*k frames <-> 1 + k latent frames
    spatial_compression: int  # s: H x W pixels <-> H/s x W/s latents
    latent_channels: int
    latents_mean: tuple[float, ...] | None  # per-channel statistics for normalize_latents (both or neither)
    latents_std: tuple[float, ...] | None

    @property
    def tag(self) -> str:
        """Short compression tag, e.g. ``t4s16c64`` (recorded in latent files)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: ``config.json`` is this plus the class name; hashed into latent files."""
        ...


@runtime_checkable
class VideoAutoencoder(Protocol):
    """A causal video autoencoder (see the module docstring for layouts, ranges and streaming)."""

    config: AutoencoderConfig

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Pixels ``(B, 3, 1+tc*k, H, W)`` in [-1, 1] -> posterior over latents ``(B, C, 1+k, H/s, W/s)``."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, 1+k, h, w)`` -> pixels ``(B, 3, 1+tc*k, s*h, s*w)``, nominally in [-1, 1] (not clamped)."""
        ...

    def new_stream(self) -> Any:
        """A fresh stream: the cache of one direction of one clip (or tile) for ``encode_chunk``/``decode_chunk``."""
        ...

    def encode_chunk(self, x: torch.Tensor, stream: Any) -> DiagonalGaussian:
        """The next pixel chunk of ``stream`` (first: 1 frame; later: a multiple of ``tc`` frames) -> the posterior
        of its latent frames (1, then ``n / tc``). Raises ``ValueError`` for a chunk of the wrong shape."""
        ...

    def decode_chunk(self, z: torch.Tensor, stream: Any) -> torch.Tensor:
        """The next latent chunk of ``stream`` ``(B, C, n, h, w)`` -> its pixels (not clamped)."""
        ...

    def check_pixels(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem unless ``x`` is a valid pixel clip for ``encode``."""
        ...

    def check_latents(self, z: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem unless ``z`` is a valid latent for ``decode``."""
        ...

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> per-channel standardised ones (identity without ``latents_mean``/``latents_std``)."""
        ...

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalize_latents``."""
        ...

    # The torch.nn.Module methods the codec uses.
    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class TrainableAutoencoder(VideoAutoencoder, Protocol):
    """What predictive training (``train/``) uses beyond the codec's protocol. The config also has ``name`` (the
    preset it came from: the default learning rate) and ``padding_mode``, and ``replace(**changes)``; the model
    class builds from its config alone (``type(model)(config)``)."""

    padding_token: torch.nn.Parameter | None  # the learned latent frame appended for dropped ones, if any

    def pad_latents(self, z: torch.Tensor, num_frames: int, mode: str | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """``z`` ``(B, C, t, h, w)`` with ``num_frames`` padding latent frames appended (``learnable`` or
        ``gaussian``; default: ``config.padding_mode``)."""
        ...

    def encoder_parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every parameter that determines the latents (what the decoder-only stage freezes)."""
        ...

    def last_decoder_weight(self) -> torch.Tensor:
        """The weight of the decoder's output layer (the adaptive GAN weight balances gradients there)."""
        ...

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Activation (gradient) checkpointing on or off (default off). When on, the whole-clip forward in training
        mode with autograd recording runs each residual block through ``torch.utils.checkpoint`` (non-reentrant):
        the same loss and gradients, most of the saved activations traded for one more forward of each block during
        backward (``runtime.memory.estimate_training_memory`` gives the figures). Streaming
        (``encode_chunk``/``decode_chunk``), evaluation and ``no_grad`` passes are unaffected."""
        ...

    def save_pretrained(self, directory: Any, model_card: str | None = None) -> Any:
        """Write a pvvae weights folder (``config.json`` + ``model.safetensors`` + card)."""
        ...
