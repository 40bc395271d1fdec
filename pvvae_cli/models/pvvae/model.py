"""``VideoVAE``: the PV-VAE network (causal 3D conv encoder/decoder with a KL posterior).

It implements ``models.protocol.VideoAutoencoder``. Public boundary layouts and ranges (``tc`` and ``s`` are the
config's ``temporal_compression`` and ``spatial_compression``, 4 and 16 for t4s16):
- pixels ``x``: float ``(B, 3, T, H, W)`` in [-1, 1], ``T = 1 + tc*k`` (one frame is an image), ``H, W``
  multiples of ``s``;
- latents ``z``: ``(B, C, t, h, w)`` with ``t = 1 + k``, ``h = H / s``, ``w = W / s``, un-normalised
  (``normalize_latents`` maps them to the per-channel standardised space).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.frames import check_frame_count
from pvvae_cli.models import weights
from pvvae_cli.models.blocks import ChannelRMSNorm, Downsample, MidBlock, ResBlock, Upsample, init_identity_residuals
from pvvae_cli.models.causal_conv import CausalConv3d, StreamState
from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.models.pvvae.config import VAEConfig, get_preset


def init_current_frame_(conv: nn.Conv2d | nn.Conv3d) -> None:
    """Initialise ``conv`` as a scale-preserving 2-D conv on the current frame (see ``initialize_weights``)."""
    w = conv.weight
    if w.is_meta:
        return
    fan_in = w.shape[1] * w.shape[-2] * w.shape[-1]  # input channels x spatial taps (one temporal tap is live)
    with torch.no_grad():
        if w.ndim == 5:
            w.zero_()
            w[:, :, -1].normal_(0.0, fan_in**-0.5)
        else:
            w.normal_(0.0, fan_in**-0.5)
        if conv.bias is not None:
            conv.bias.zero_()


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_multipliers]
        self.conv_in = CausalConv3d(cfg.in_channels, widths[0], 3)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, width in enumerate(widths):
            in_w = widths[max(i - 1, 0)]
            blocks = [ResBlock(in_w if j == 0 else width, width) for j in range(cfg.layers_per_block)]
            self.levels.append(nn.ModuleList(blocks))
            if i < cfg.num_stages:
                # Spatio-temporal stages come first, then spatial-only ones (PV-VAE §3.1).
                self.downsamples.append(Downsample(width, temporal=i < cfg.num_temporal_stages))
        self.mid = MidBlock(widths[-1], cfg.mid_attention)
        self.norm_out = ChannelRMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * cfg.latent_channels, 3)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv_in(x, state)  # (B, C0, T, H, W)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, state)
            if i < len(self.downsamples):
                h = self.downsamples[i](h, state)
        h = self.mid(h, state)  # (B, C_top, t, h, w)
        return self.conv_out(F.silu(self.norm_out(h)), state)  # (B, 2*latent, t, h, w): mean, logvar


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_multipliers]
        self.conv_in = CausalConv3d(cfg.latent_channels, widths[-1], 3)
        self.mid = MidBlock(widths[-1], cfg.mid_attention)
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(widths))):
            in_w = widths[min(i + 1, len(widths) - 1)]
            blocks = [ResBlock(in_w if j == 0 else widths[i], widths[i]) for j in range(cfg.layers_per_block + 1)]
            self.levels.append(nn.ModuleList(blocks))
            if i > 0:
                # Mirror of the encoder: spatial-only stages first, the spatio-temporal ones last.
                self.upsamples.append(Upsample(widths[i], temporal=i <= cfg.num_temporal_stages))
        self.norm_out = ChannelRMSNorm(widths[0])
        self.conv_out = CausalConv3d(widths[0], cfg.in_channels, 3)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.mid(self.conv_in(z, state), state)  # (B, C_top, t, h, w)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, state)
            if i < len(self.upsamples):
                h = self.upsamples[i](h, state)
        return self.conv_out(F.silu(self.norm_out(h)), state)  # (B, 3, T, H, W)


class VideoVAE(nn.Module):
    """PV-VAE: ``encode`` pixels to a ``DiagonalGaussian`` over latents, ``decode`` latents to pixels.

    Also holds the learnable padding token that predictive training appends for dropped latent frames
    (``config.padding_mode == "learnable"``); ``pad_latents`` appends it (or Gaussian noise).
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.padding_mode == "learnable":
            # One token per channel, shared by every padded position; zero is the prior's mean.
            self.padding_token = nn.Parameter(torch.zeros(config.latent_channels))
        else:
            self.padding_token = None
        self.initialize_weights()

    # Initial log-variance of the posterior. At 0 (std 1) the sampled latents are mostly noise while the means
    # are still small, which slows early training; std ~0.05 lets reconstruction start at once, and the KL term
    # moves it from there (measured with the 0.1.0 conv init, tiny, 300 overfitting steps: 18.7 dB at 0 vs
    # 23.3 dB at -6; not re-measured with the current init).
    INITIAL_LOGVAR = -6.0

    def initialize_weights(self) -> None:
        """All non-default initialisation, in one place (``benchmarks/diagnose_learning.py`` measures why).

        PyTorch's default conv init (uniform, variance ``1 / (3 * fan_in)`` with ``fan_in`` counting all
        ``kt * kh * kw`` taps) shrank the signal at every un-normalised convolution: on a single frame two of the
        three causal temporal taps see zero padding, so each stride-2 conv lost 2-4x in amplitude and the latents
        of different images were nearly equal (std across images 0.04). The decoder then learnt the mean colour
        and the encoder's gradient vanished. Instead:

        - every causal conv starts as its 2-D counterpart on the *current* frame: the spatial kernel, normal with
          variance ``1 / (C_in * kh * kw)`` (preserves the activation scale), sits on the last temporal tap and
          the past taps start at zero. An image and every frame of a video then see the same statistics at
          init (a full 3-D fan-in is right for video and ~sqrt(3)x too small for images, or the reverse); the
          past taps learn from the first step, since their inputs are not zero;
        - the last conv of each residual branch (and the attention's output projection) starts at zero, so each
          block starts as the identity and the trunk carries the signal through the whole depth;
        - temporal upsampling starts as frame repetition (its two output halves copy the input);
        - the posterior's log-variance bias starts at ``INITIAL_LOGVAR``.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                init_current_frame_(m)
        init_identity_residuals(self)
        bias = self.encoder.conv_out.bias
        if bias is not None and not bias.is_meta:
            with torch.no_grad():
                bias[self.config.latent_channels :].fill_(self.INITIAL_LOGVAR)

    # ------------------------------------------------------------------ construction and weights
    @classmethod
    def from_preset(cls, name: str, **overrides) -> VideoVAE:
        """A randomly initialised model of a preset (``tiny``, ``small``, ``base``, ...)."""
        return cls(get_preset(name).replace(**overrides) if overrides else get_preset(name))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, revision: str | None = None, device: str | torch.device = "cpu"
    ) -> VideoVAE:
        """Load from a weights folder (``config.json`` + ``model.safetensors``) or a Hugging Face repo id."""
        return weights.load_pretrained(name_or_path, revision=revision, device=device, expect=VideoVAE)

    def save_pretrained(self, directory: str | Path, model_card: str | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ ``README.md`` if ``model_card``) to ``directory``."""
        return weights.save_pretrained(self, directory, model_card=model_card)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ training (protocol.TrainableAutoencoder)
    def encoder_parameters(self):
        return self.encoder.parameters()

    def last_decoder_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

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
    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """``x``: ``(B, 3, 1+tc*k, H, W)`` in [-1, 1] -> posterior over ``(B, C, 1+k, H/s, W/s)``."""
        self.check_pixels(x)
        return DiagonalGaussian.from_moments(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(B, C, 1+k, h, w)`` -> pixels ``(B, 3, 1+tc*k, s*h, s*w)``, nominally in [-1, 1] (not clamped)."""
        self.check_latents(z)
        return self.decoder(z)

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
        first = not stream.has_started(self.encoder)
        n = x.shape[2] if x.ndim == 5 else -1
        if first and n != 1:
            raise ValueError(f"the first chunk of a stream must hold 1 frame, got shape {tuple(x.shape)}")
        if not first and (n < 1 or n % tc):
            raise ValueError(f"chunks after the first must hold a multiple of {tc} frames, got shape {tuple(x.shape)}")
        self.check_pixels(x[:, :, :1])
        stream.first_call(self.encoder)  # marks the stream as started
        return DiagonalGaussian.from_moments(self.encoder(x, stream))

    def decode_chunk(self, z: torch.Tensor, stream: StreamState) -> torch.Tensor:
        """The next latent chunk ``(B, C, n, h, w)`` (any ``n >= 1``) of ``stream``'s clip -> its pixels (the first
        latent frame gives 1 frame, each later one ``tc``), not clamped; concatenated they equal ``decode``."""
        self.check_latents(z)
        return self.decoder(z, stream)

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

    # ------------------------------------------------------------------ latent space helpers
    def pad_latents(
        self, z: torch.Tensor, num_frames: int, mode: str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Append ``num_frames`` padding latent frames to ``z`` ``(B, C, t, h, w)`` along time.

        ``mode``: ``learnable`` (the model's padding token) or ``gaussian`` (N(0, I) samples); default is the
        config's ``padding_mode``.
        """
        mode = mode or self.config.padding_mode
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        if num_frames == 0:
            return z
        b, c, _, h, w = z.shape
        if mode == "learnable":
            if self.padding_token is None:
                raise ValueError("this model has no learned padding tokens (trained with gaussian padding); "
                                 "use gaussian padding")
            pad = self.padding_token.to(z.dtype).view(1, c, 1, 1, 1).expand(b, c, num_frames, h, w)
        elif mode == "gaussian":
            pad = torch.randn((b, c, num_frames, h, w), generator=generator, device=z.device, dtype=z.dtype)
        else:
            raise ValueError(f"unknown padding mode {mode!r}; use learnable or gaussian")
        return torch.cat([z, pad], dim=2)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Map raw latents to per-channel standardised ones (identity if the config has no statistics)."""
        mean, std = self._latent_stats(z)
        return z if mean is None else (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalize_latents``."""
        mean, std = self._latent_stats(z)
        return z if mean is None else z * std + mean

    def _latent_stats(self, z: torch.Tensor):
        cfg = self.config
        if cfg.latents_mean is None:
            return None, None
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=z.device, dtype=z.dtype).view(shape)
        std = torch.tensor(cfg.latents_std, device=z.device, dtype=z.dtype).view(shape)
        return mean, std
