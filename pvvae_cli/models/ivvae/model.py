"""``IVVAE``: the IV-VAE network (GCConv + KTC encoder/decoder with a KL posterior).

It implements ``models.protocol.VideoAutoencoder``. Layouts and ranges at its boundary (``tc``, ``s``: the
config's ``temporal_compression`` and ``spatial_compression``):
- pixels ``x``: float ``(B, 3, 1+tc*k, H, W)`` in [-1, 1], ``H, W`` multiples of ``s``;
- latents ``z``: ``(B, C, 1+k, H/s, W/s)``, channels ``[keyframe half (C/2) | motion half (C/2)]``, raw
  (``normalize_latents`` maps them to the standardised space, the reference's ``scale * (z - shift)``).

Latent frame ``j >= 1`` depends on pixel groups ``1..j`` only (GCConv is causal between groups), so streaming is
exact: ``encode_chunk`` takes the first frame, then whole groups of ``tc`` frames; ``decode_chunk`` any number of
latent frames. The decoder predicts ``[keyframe | motion]`` pixels (6 channels); the clip's first frame and the
first frame of each group come from the keyframe half, the other frames of a group from the motion half.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.blocks import FrameAttention
from pvvae_cli.models.causal_autoencoder import CausalConvAutoencoder
from pvvae_cli.models.causal_conv import StreamState
from pvvae_cli.models.checkpointing import GradCheckpointing
from pvvae_cli.models.group_causal_conv import GroupCausalConv3d
from pvvae_cli.models.ivvae.config import PRESETS, IVVAEConfig
from pvvae_cli.models.ivvae.layers import (
    AtrousHead,
    Downsample,
    FrameConv,
    KTCConv,
    ResBlock,
    Upsample,
    attention,
    conv,
    norm,
)
from pvvae_cli.models.precision import fp32_posterior

# Initial log-variance of the posterior (std ~0.05): reconstruction starts at once and the KL term moves it from
# there (the same choice and reason as VideoVAE.INITIAL_LOGVAR).
INITIAL_LOGVAR = -6.0


class Encoder(GradCheckpointing, nn.Module):
    def __init__(self, cfg: IVVAEConfig) -> None:
        super().__init__()
        widths, z, split = cfg.widths, cfg.latent_channels, cfg.keyframe_compression
        self.conv_in = conv(cfg.in_channels, widths[0], 3, cfg.encoder_group(0), split)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, width in enumerate(widths):
            group, deepest = cfg.encoder_group(i), i == cfg.num_stages
            blocks: list[nn.Module] = []
            for j in range(cfg.layers_per_block):
                blocks.append(ResBlock(widths[max(i - 1, 0)] if j == 0 else width, width, group, split))
                if deepest and cfg.attention:
                    blocks.append(attention(width, split))
            self.levels.append(nn.ModuleList(blocks))
            if not deepest:
                down: list[nn.Module] = [Downsample(width, cfg.is_temporal_stage(i), split)]
                if i == cfg.num_stages - 1 and cfg.attention:
                    down.append(attention(width, split))
                self.downsamples.append(nn.ModuleList(down))
        top = widths[-1]
        self.mid = nn.ModuleList([ResBlock(top, top, 1, split)] + ([attention(top, split)] if cfg.attention else [])
                                 + [ResBlock(top, top, 1, split)])
        self.norm_out = norm(2 * top, split)
        self.head = AtrousHead(2 * top, z)
        # -> [key: mean, logvar | motion: mean, logvar] (without KTC just four quarters in the same order)
        self.quant_conv = KTCConv(2 * z, z, z, 1, 1) if split else GroupCausalConv3d(2 * z, 2 * z, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv_in(x, state)  # (B, 2*C0, T, H, W)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = self.run_block(block, h, state=state)  # checkpointed in training when switched on
            if i < len(self.downsamples):
                for layer in self.downsamples[i]:
                    h = layer(h, state)
        for block in self.mid:
            h = self.run_block(block, h, state=state)  # (B, 2*C_top, t, h, w)
        h = self.head(F.silu(self.norm_out(h)))  # (B, 2*z, t, h, w)
        with fp32_posterior(h):  # the projection to the posterior in fp32, not bf16 (models.precision)
            h = self.quant_conv(h.float())
        key, motion = h.chunk(2, dim=1)
        key_mean, key_logvar = key.chunk(2, dim=1)
        motion_mean, motion_logvar = motion.chunk(2, dim=1)
        # The latent is [keyframe mean | motion mean] (the reference's channel order), then the log-variances.
        return torch.cat([key_mean, motion_mean, key_logvar, motion_logvar], dim=1)  # (B, 2*z, t, h, w)


class Decoder(GradCheckpointing, nn.Module):
    def __init__(self, cfg: IVVAEConfig) -> None:
        super().__init__()
        widths, z, split = cfg.widths, cfg.latent_channels, cfg.keyframe_compression
        self.temporal_compression = cfg.temporal_compression
        self.split = split
        top = widths[-1]
        self.post_quant_conv = KTCConv(z, z // 2, z // 2, 1, 1) if split else GroupCausalConv3d(z, z, 1)
        self.conv_in = FrameConv(z, 2 * top, 3)
        self.mid = nn.ModuleList([ResBlock(top, top, 1, split)] + ([attention(top, split)] if cfg.attention else [])
                                 + [ResBlock(top, top, 1, split)])
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(widths))):
            width, group, deepest = widths[i], cfg.encoder_group(i), i == cfg.num_stages
            in_half = top if deepest else widths[i + 1] // 2  # every upsampling halves the width
            blocks: list[nn.Module] = []
            for j in range(cfg.layers_per_block + 1):
                blocks.append(ResBlock(in_half if j == 0 else width, width, group, split))
                if deepest and cfg.attention:
                    blocks.append(attention(width, split))
            self.levels.append(nn.ModuleList(blocks))
            if i > 0:  # mirror of encoder stage i - 1: the temporal stages come first here
                self.upsamples.append(Upsample(width, cfg.is_temporal_stage(i - 1), split))
        self.norm_out = norm(2 * widths[0], split)
        if split:  # [keyframe | motion] pixels
            self.conv_out = KTCConv(2 * widths[0], cfg.in_channels, cfg.in_channels, 3, cfg.encoder_group(0))
        else:
            self.conv_out = GroupCausalConv3d(2 * widths[0], cfg.in_channels, 3, group=cfg.encoder_group(0))

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv_in(self.post_quant_conv(z))  # (B, 2*C_top, t, h, w)
        for block in self.mid:
            h = self.run_block(block, h, state=state)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = self.run_block(block, h, state=state)  # checkpointed in training when switched on
            if i < len(self.upsamples):
                h = self.upsamples[i](h, state)
        out = self.run_block(self.to_pixels, h, state=state)  # (B, 6, T, H, W): [keyframe | motion] pixels
        if not self.split:
            return out  # (B, 3, T, H, W)
        key, motion = out.chunk(2, dim=1)
        starts_clip = state is None or state.first_call(self)
        return torch.where(self.keyframe_mask(out.shape[2], starts_clip, out.device), key, motion)

    def to_pixels(self, h: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """The output layers, ``(B, 2*C0, T, H, W)`` -> pixels: a block of its own for checkpointing (it keeps
        three full-resolution activations and recomputes for the price of a norm and a conv to a few channels)."""
        return self.conv_out(F.silu(self.norm_out(h)), state)

    def keyframe_mask(self, frames: int, starts_clip: bool, device: torch.device) -> torch.Tensor:
        """``(1, 1, T, 1, 1)`` bool: the frames taken from the keyframe half (the clip's first frame and each
        group's first frame; a chunk that does not start the clip starts at a group boundary)."""
        index = torch.arange(frames, device=device) - int(starts_clip)
        mask = (index < 0) | (index % self.temporal_compression == 0)
        return mask.view(1, 1, -1, 1, 1)


def _normal_(w: torch.Tensor, fan_in: int) -> None:
    w.normal_(0.0, fan_in**-0.5)


class IVVAE(CausalConvAutoencoder):
    """IV-VAE: ``encode`` pixels to a ``DiagonalGaussian`` over latents, ``decode`` latents to pixels; also holds
    the learnable padding token of predictive training (``config.padding_mode == "learnable"``)."""

    presets = PRESETS

    def __init__(self, config: IVVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self._init_padding_token()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All non-default initialisation, in one place; the lessons of ``VideoVAE.initialize_weights``:

        - every convolution is scale preserving (normal, variance ``1 / fan_in``) and every GCConv starts as its
          2-D counterpart on the *current* frame (the centre temporal tap; the previous and next taps start at
          zero and learn from the first step), so an image and every frame of a video see the same statistics;
        - the last conv of each residual branch and each attention's output projection start at zero (every block
          starts as the identity);
        - temporal downsampling starts as the mean of each pair, temporal upsampling as frame repetition;
        - the posterior's log-variance biases start at ``INITIAL_LOGVAR``.

        Measured by ``benchmarks/ivvae_init_variants.py`` (150 steps; two 5-frame clips / four images, 32x32):
        21.1 / 23.3 dB with this init, 21.3 / 22.6 dB with PyTorch's default (IV-VAE normalises before almost every
        conv, so the scale matters little), 18.8 / 20.9 dB with live residual branches (the identity start is what
        counts here).
        """
        if self.encoder.head.fuse.weight.is_meta:
            return  # built on the meta device to receive loaded tensors
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, GroupCausalConv3d):
                    w = m.weight  # (O, I, kt, kh, kw)
                    w.zero_()
                    _normal_(w[:, :, w.shape[2] // 2], w.shape[1] * w.shape[3] * w.shape[4])
                elif isinstance(m, nn.Conv2d):
                    _normal_(m.weight, m.weight[0].numel())
                elif isinstance(m, nn.Conv3d):  # temporal resampling: set below
                    m.weight.zero_()
                if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.bias is not None:
                    m.bias.zero_()
            for m in self.modules():
                if isinstance(m, ResBlock):
                    for p in m.conv2.parameters():
                        p.zero_()
                elif isinstance(m, FrameAttention):
                    m.proj.weight.zero_()
                elif isinstance(m, Downsample) and m.time_conv is not None:
                    w = m.time_conv.weight
                    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
                    m.time_conv.weight[:, :, 0, 0, 0] = 0.5 * eye
                    m.time_conv.weight[:, :, 1, 0, 0] = 0.5 * eye
                elif isinstance(m, Upsample) and m.time_conv is not None:
                    w = m.time_conv.weight
                    c = w.shape[1]
                    eye = torch.eye(c, dtype=w.dtype, device=w.device)
                    m.time_conv.weight[:c, :, 0, 0, 0] = eye  # even frames
                    m.time_conv.weight[c:, :, 0, 0, 0] = eye  # odd frames
            half = self.config.latent_channels // 2
            quant = self.encoder.quant_conv
            for bias in (quant.conv_2d.bias, quant.conv_3d.bias) if isinstance(quant, KTCConv) else quant.bias.chunk(2):
                bias[half:].fill_(INITIAL_LOGVAR)  # each: [mean | logvar] of one half

    def last_decoder_weight(self) -> torch.Tensor:
        """The weight the adaptive GAN loss weight is measured on: the decoder's motion-half output conv (it
        makes three of every four frames)."""
        out = self.decoder.conv_out
        return out.conv_3d.weight if isinstance(out, KTCConv) else out.weight
