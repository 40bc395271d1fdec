"""``LatteDiT``: a Latte-style video diffusion transformer over latents ``(B, C, t, h, w)``.

Latte (Ma et al., 2024, "variant 1"): patch embedding per latent frame, then ``depth`` transformer blocks that
alternate spatial attention (the ``(h/p)*(w/p)`` tokens of one latent frame attend to each other) and temporal
attention (the ``t`` tokens of one spatial position), each conditioned by adaLN-Zero on the embedding of the flow
time plus (optionally) a class label; a final adaLN layer maps every token back to a ``p x p x C`` patch.

The network knows nothing about the noise process: it maps ``(x, t, y)`` to an output of ``x``'s shape, which the
flow (``flow.py``) trains as a velocity and the sampler (``sampler.py``) integrates. Pure module: no file I/O.

Differences from Latte's own code, on purpose: positional embeddings are computed for the actual grid (any
``h x w``, non-square included, instead of a square table fixed at construction), and the time embedding is
computed in float32 with autocast off (bf16 rounds t*1000 = 998.4 to 1000, so nearby times would collide).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.gen.config import GenConfig
from pvvae_cli.models.checkpointing import GradCheckpointing, set_grad_checkpointing

TIME_SCALE = 1000.0  # t in [0, 1] is embedded as t * 1000, the range DiT's frequencies were chosen for


def sincos_1d(dim: int, positions: torch.Tensor, max_period: float = 10000.0) -> torch.Tensor:
    """``(N,)`` float positions -> ``(N, dim)`` float32 embedding: ``[sin(p w_i), cos(p w_i)]`` with
    ``w_i = max_period^(-i / (dim/2))`` (the transformer's / DiT's)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def sincos_2d(dim: int, rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """``(rows*cols, dim)`` fixed 2-D embedding of a ``rows x cols`` grid in row-major order: half the width
    encodes the column, half the row. Any grid (not only square ones)."""
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    return torch.cat([sincos_1d(dim // 2, c), sincos_1d(dim // 2, r)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Flow time ``t`` ``(B,)`` in [0, 1] -> ``(B, D)`` float32: sinusoidal features of ``t * 1000`` then an MLP,
    all in float32 even inside an autocast region."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=t.device.type, enabled=False):
            freqs = sincos_1d(self.freq_dim, t.float() * TIME_SCALE)
            return self.mlp(freqs)


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of ``(..., L, D)`` (all leading axes are batch)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, (length, dim) = x.shape[:-2], x.shape[-2:]
        h = self.num_heads
        qkv = self.qkv(x.reshape(-1, length, dim)).reshape(-1, length, 3, h, dim // h)  # (N, L, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, L, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, L, d)
        out = out.transpose(1, 2).reshape(-1, length, dim)
        return self.proj(out).reshape(*lead, length, dim)


class Block(nn.Module):
    """A DiT block with adaLN-Zero: attention over the tokens axis of ``x`` ``(B, G, L, D)`` (G groups of L
    tokens), then an MLP; both residual branches scaled by gates that start at zero."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # c (B, D) -> six (B, 1, 1, D) modulations, broadcast over groups and tokens
        mods = self.adaLN_modulation(c)[:, None, None].chunk(6, dim=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class LatteDiT(GradCheckpointing, nn.Module):
    """``forward(x, t, y)``: latents ``x`` ``(B, C, t, h, w)`` (normalised: ~zero mean, unit variance per channel),
    flow time ``t`` ``(B,)`` in [0, 1], class labels ``y`` ``(B,)`` int64 in ``0..num_classes`` (``num_classes``
    is the null class; ``None`` = all null) -> float32 ``(B, C, t, h, w)``. ``h`` and ``w`` must be multiples of
    the patch size; any ``t``, ``h``, ``w`` otherwise (positional embeddings are computed per call)."""

    def __init__(self, config: GenConfig) -> None:
        super().__init__()
        self.config = config
        c, p, d = config.latent_channels, config.patch_size, config.hidden_size
        self.x_embedder = nn.Linear(c * p * p, d)  # patchify: one token per p x p patch of one latent frame
        self.t_embedder = TimestepEmbedder(d)
        # one more row than classes: the null label, used for unconditional and classifier-free guidance
        self.y_embedder = nn.Embedding(config.num_classes + 1, d) if config.conditional else None
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_layer = FinalLayer(d, p * p * c)
        self.initialize_weights()

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def initialize_weights(self) -> None:
        """DiT's initialisation, in one place: Xavier-uniform linears with zero bias; N(0, 0.02) time-MLP and label
        embeddings; adaLN modulations and the output layer zero, so every block starts as the identity and the
        initial output is exactly zero (adaLN-Zero)."""
        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(xavier)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Activation checkpointing, one transformer block at a time (``models.checkpointing``): in training mode
        with autograd on, each block keeps only its inputs and is recomputed during backward. Off by default."""
        set_grad_checkpointing(self, enabled)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem unless ``x`` is ``(B, C, t, h, w)`` this model can take."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.latent_channels:
            raise ValueError(f"expected latents (B, {cfg.latent_channels}, t, h, w), got {tuple(x.shape)}")
        if x.shape[-2] % cfg.patch_size or x.shape[-1] % cfg.patch_size:
            raise ValueError(f"latent size {x.shape[-2]}x{x.shape[-1]} is not a multiple of the patch size "
                             f"{cfg.patch_size}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        b, c, frames, height, width = x.shape
        p = self.config.patch_size
        rows, cols = height // p, width // p
        # (B, C, T, H, W) -> (B, T, rows*cols, C*p*p)
        tokens = x.reshape(b, c, frames, rows, p, cols, p).permute(0, 2, 3, 5, 1, 4, 6)
        tokens = self.x_embedder(tokens.reshape(b, frames, rows * cols, c * p * p))  # (B, T, N, D)
        d = tokens.shape[-1]
        tokens = tokens + sincos_2d(d, rows, cols, x.device).to(tokens.dtype)

        cond = self.t_embedder(t.expand(b) if t.ndim == 0 else t)  # (B, D) float32
        if self.y_embedder is not None:
            labels = torch.full((b,), self.null_class, device=x.device, dtype=torch.long) if y is None else y
            cond = cond + self.y_embedder(labels)
        elif y is not None:
            raise ValueError("this model is unconditional (num_classes = 0): sample it without a class")

        time_pos = sincos_1d(d, torch.arange(frames, device=x.device))  # (T, D), broadcast over (B, N)
        for i in range(0, len(self.blocks), 2):
            # each block checkpointed on its own in training when switched on (set_grad_checkpointing)
            tokens = self.run_block(self.blocks[i], tokens, cond)  # spatial: attention over the N tokens of a frame
            tokens = tokens.transpose(1, 2)  # (B, N, T, D)
            if i == 0:  # Latte adds the temporal embedding once, before the first temporal block
                tokens = tokens + time_pos.to(tokens.dtype)
            tokens = self.run_block(self.blocks[i + 1], tokens, cond)  # temporal: over the T tokens of a position
            tokens = tokens.transpose(1, 2)  # (B, T, N, D)

        out = self.final_layer(tokens, cond)  # (B, T, N, p*p*C)
        out = out.reshape(b, frames, rows, cols, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return out.reshape(b, c, frames, height, width).float()

    @classmethod
    def from_preset(cls, name: str, **fields) -> LatteDiT:
        """Random weights of a preset with the latent fields given (``latent_channels=...``); tests only."""
        from pvvae_cli.gen.config import get_preset

        return cls(get_preset(name).replace(**fields))
