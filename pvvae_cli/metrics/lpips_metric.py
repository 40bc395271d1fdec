"""LPIPS as a video metric: per frame on [-1, 1], then the mean over frames.

The network comes from ``metrics.perceptual.load_lpips`` (the same loader the training loss uses). Without
the real backbone weights it raises ``MetricUnavailable`` with the fix; ``random_backbone=True`` exists only to
test the wiring and never gives a reportable number.
"""

from __future__ import annotations

import torch

from pvvae_cli.metrics.perceptual import load_lpips


class LPIPSMetric:
    """Callable ``(x, y) -> (B,)``: LPIPS per sample of pixels ``(B, 3, T, H, W)`` or ``(N, 3, H, W)`` in [-1, 1].

    Frames are scored in batches of ``frames_per_batch`` to bound memory. ``net`` is the backbone (``alex`` as
    in the paper's protocol).
    """

    def __init__(
        self,
        net: str = "alex",
        device: str | torch.device = "cpu",
        random_backbone: bool = False,
        frames_per_batch: int = 32,
    ) -> None:
        self.net = net
        self.device = torch.device(device)
        self.random_backbone = random_backbone
        self.frames_per_batch = frames_per_batch
        self.model = load_lpips(net, random_backbone=random_backbone).to(self.device)

    @property
    def description(self) -> str:
        backbone = "RANDOM backbone (tests only)" if self.random_backbone else "ImageNet backbone"
        return f"lpips {self.net} v0.1, {backbone}, per frame on [-1, 1], mean over frames"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.ndim == 4:
            x, y = x.unsqueeze(2), y.unsqueeze(2)
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) or (N, 3, H, W), got shape {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        # (B, 3, T, H, W) -> (B*T, 3, H, W): LPIPS is an image metric.
        fx = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w).float().clamp(-1, 1)
        fy = y.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w).float().clamp(-1, 1)
        scores = []
        for i in range(0, b * t, self.frames_per_batch):
            a = fx[i : i + self.frames_per_batch].to(self.device)
            c = fy[i : i + self.frames_per_batch].to(self.device)
            scores.append(self.model(a, c).flatten().double().cpu())
        return torch.cat(scores).view(b, t).mean(1).float()
