"""LPIPS-family image distances as video metrics: per frame on [-1, 1], then the mean over frames.

- ``STLPIPSMetric``: ST-LPIPS (alex), ``metrics.stlpips`` with the converted weights of ``pvvae setup-metrics``
  (``--stlpips PATH`` / ``$PVVAE_STLPIPS`` / the metrics cache). Reported as "ST-LPIPS (alex)", never as LPIPS.
- ``LPIPSMetric``: LPIPS (AlexNet) through ``metrics.perceptual.load_lpips``, where torchvision's ImageNet backbone
  can be had; ``random_backbone=True`` exists only to test the wiring and never gives a reportable number.

Without the weights each raises ``MetricUnavailable`` with the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pvvae_cli.metrics.network_files import STLPIPS_SOURCE, resolve_network_file
from pvvae_cli.metrics.perceptual import load_lpips


class FrameDistance:
    """Callable ``(x, y) -> (B,)``: an image distance ``model(a, b) -> (N, ...)`` per frame of pixels
    ``(B, 3, T, H, W)`` (or images ``(N, 3, H, W)``) in [-1, 1], then the mean over frames. Frames are scored in
    batches of ``frames_per_batch`` to bound memory."""

    description = ""

    def __init__(self, model: torch.nn.Module, device: str | torch.device, frames_per_batch: int) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.frames_per_batch = frames_per_batch

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.ndim == 4:
            x, y = x.unsqueeze(2), y.unsqueeze(2)
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) or (N, 3, H, W), got shape {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        # (B, 3, T, H, W) -> (B*T, 3, H, W): an image metric, frame by frame.
        fx = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w).float().clamp(-1, 1)
        fy = y.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w).float().clamp(-1, 1)
        scores = []
        for i in range(0, b * t, self.frames_per_batch):
            a = fx[i : i + self.frames_per_batch].to(self.device)
            c = fy[i : i + self.frames_per_batch].to(self.device)
            scores.append(self.model(a, c).flatten().double().cpu())
        return torch.cat(scores).view(b, t).mean(1).float()


class STLPIPSMetric(FrameDistance):
    """ST-LPIPS (alex) per sample ``(B,)`` of pixels ``(B, 3, T, H, W)`` or ``(N, 3, H, W)`` in [-1, 1]; frames
    at least 21x21. ``path``: a converted weight file (else ``$PVVAE_STLPIPS``, else the metrics cache)."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu",
                 frames_per_batch: int = 32) -> None:
        from pvvae_cli.metrics.stlpips import load_stlpips

        self.path = resolve_network_file(STLPIPS_SOURCE, path, "--stlpips")
        super().__init__(load_stlpips(self.path), device, frames_per_batch)

    @property
    def description(self) -> str:
        return (f"ST-LPIPS (alex) ({STLPIPS_SOURCE.requirement} alex_shift_tolerant weights, {self.path.name}): "
                "shift-tolerant LPIPS, not comparable with LPIPS numbers; per frame on [-1, 1], mean over frames")


class LPIPSMetric(FrameDistance):
    """LPIPS per sample ``(B,)`` of pixels ``(B, 3, T, H, W)`` or ``(N, 3, H, W)`` in [-1, 1]. ``net`` is the
    backbone (``alex`` as in the paper's protocol)."""

    def __init__(
        self,
        net: str = "alex",
        device: str | torch.device = "cpu",
        random_backbone: bool = False,
        frames_per_batch: int = 32,
    ) -> None:
        self.net = net
        self.random_backbone = random_backbone
        super().__init__(load_lpips(net, random_backbone=random_backbone), device, frames_per_batch)

    @property
    def description(self) -> str:
        backbone = "RANDOM backbone (tests only)" if self.random_backbone else "ImageNet backbone"
        return f"lpips {self.net} v0.1, {backbone}, per frame on [-1, 1], mean over frames"
