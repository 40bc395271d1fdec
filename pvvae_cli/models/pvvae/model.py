"""``VideoVAE``: the PV-VAE network (causal 3D conv encoder/decoder with a KL posterior).

It implements ``models.protocol.VideoAutoencoder``. Public boundary layouts and ranges (``tc`` and ``s`` are the
config's ``temporal_compression`` and ``spatial_compression``, 4 and 16 for t4s16):
- pixels ``x``: float ``(B, 3, T, H, W)`` in [-1, 1], ``T = 1 + tc*k`` (one frame is an image), ``H, W``
  multiples of ``s``;
- latents ``z``: ``(B, C, t, h, w)`` with ``t = 1 + k``, ``h = H / s``, ``w = W / s``, un-normalised
  (``normalize_latents`` maps them to the per-channel standardised space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.block_shortcut import BlockDecoder, BlockEncoder, init_from_pca_, init_orthonormal_
from pvvae_cli.models.blocks import ChannelRMSNorm, Downsample, MidBlock, ResBlock, Upsample, init_identity_residuals
from pvvae_cli.models.causal_autoencoder import CausalConvAutoencoder
from pvvae_cli.models.causal_conv import CausalConv3d, StreamState
from pvvae_cli.models.checkpointing import GradCheckpointing
from pvvae_cli.models.pixel_refiner import PixelRefiner
from pvvae_cli.models.precision import fp32_posterior
from pvvae_cli.models.pvvae.config import PRESETS, VAEConfig


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


class Encoder(GradCheckpointing, nn.Module):
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
        self.shortcut = (BlockEncoder(cfg.latent_channels, cfg.temporal_compression, cfg.spatial_compression)
                         if cfg.linear_shortcut else None)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv_in(x, state)  # (B, C0, T, H, W)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = self.run_block(block, h, state=state)  # checkpointed in training when switched on
            if i < len(self.downsamples):
                h = self.downsamples[i](h, state)
        h = F.silu(self.norm_out(self.run_block(self.mid, h, state=state)))  # (B, C_top, t, h, w)
        with fp32_posterior(h):  # the moments (and the shortcut's share of the mean) in fp32, not bf16
            moments = self.conv_out(h.float(), state)  # (B, 2*latent, t, h, w): mean, logvar
            if self.shortcut is None:
                return moments
            mean, logvar = moments.chunk(2, dim=1)
            return torch.cat([mean + self.shortcut(x.float(), state), logvar], dim=1)


class Decoder(GradCheckpointing, nn.Module):
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
        self.shortcut = (BlockDecoder(cfg.latent_channels, cfg.temporal_compression, cfg.spatial_compression)
                         if cfg.linear_shortcut else None)
        self.refiner = (PixelRefiner(cfg.refiner_channels, cfg.refiner_blocks, cfg.temporal_compression,
                                     cfg.in_channels) if cfg.refiner_channels else None)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        linear = None if self.shortcut is None else self.shortcut(z, state)
        h = self.run_block(self.mid, self.conv_in(z, state), state=state)  # (B, C_top, t, h, w)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = self.run_block(block, h, state=state)  # checkpointed in training when switched on
            if i < len(self.upsamples):
                h = self.upsamples[i](h, state)
        y = self.run_block(self.to_pixels, h, state=state)  # (B, 3, T, H, W)
        if linear is not None:
            y = y + linear.to(y.dtype)
        return y if self.refiner is None else self.run_block(self.refiner, y, state=state)

    def to_pixels(self, h: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """The output layers, ``(B, C0, T, H, W)`` -> ``(B, 3, T, H, W)``: a block of its own for checkpointing,
        since it keeps three full-resolution activations for backward and recomputes for the price of a norm and a
        conv to 3 channels."""
        return self.conv_out(F.silu(self.norm_out(h)), state)


class VideoVAE(CausalConvAutoencoder):
    """PV-VAE: ``encode`` pixels to a ``DiagonalGaussian`` over latents, ``decode`` latents to pixels.

    Also holds the learnable padding token that predictive training appends for dropped latent frames
    (``config.padding_mode == "learnable"``); ``pad_latents`` appends it (or Gaussian noise).
    """

    presets = PRESETS

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self._init_padding_token()
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
        - the posterior's log-variance bias starts at ``INITIAL_LOGVAR``;
        - the pixel refiner (``refiner_channels``) keeps its own init (``PixelRefiner.reset_parameters``);
        - with ``linear_shortcut``: the block codec starts as a random orthonormal projection and its transpose, and
          the network's own outputs (the encoder's mean half, the decoder's pixels) start at zero: the model starts
          as that linear codec, and as the PCA codec after ``init_shortcut_from_pca``.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                init_current_frame_(m)
        init_identity_residuals(self)
        bias = self.encoder.conv_out.bias
        if bias is not None and not bias.is_meta:
            with torch.no_grad():
                bias[self.config.latent_channels :].fill_(self.INITIAL_LOGVAR)
        if self.decoder.refiner is not None:
            self.decoder.refiner.reset_parameters()  # its own init (the loop above set the GCConvs' wrong taps)
        if self.config.linear_shortcut and not self.encoder.shortcut.first.is_meta:
            init_orthonormal_(self.encoder.shortcut, self.decoder.shortcut)
            with torch.no_grad():
                c = self.config.latent_channels
                self.encoder.conv_out.weight[:c].zero_()
                self.encoder.conv_out.bias[:c].zero_()
                self.decoder.conv_out.weight.zero_()
                self.decoder.conv_out.bias.zero_()

    def shortcut_parameters(self):
        """The linear block shortcut's parameters, encoder's and decoder's (none without ``linear_shortcut``)."""
        for part in (self.encoder.shortcut, self.decoder.shortcut):
            if part is not None:
                yield from part.parameters()

    def init_shortcut_from_pca(self, pca) -> None:
        """Set the linear shortcut to a fitted ``eval.baselines.BlockPCA`` of the model's geometry (``tc``, ``s``,
        ``latent_channels`` components). Call it on a fresh model: with the network's outputs still at zero, the
        model then reconstructs exactly as the PCA codec."""
        if not self.config.linear_shortcut:
            raise ValueError("this model has no linear shortcut (config linear_shortcut=false)")
        init_from_pca_(self.encoder.shortcut, self.decoder.shortcut, pca)
