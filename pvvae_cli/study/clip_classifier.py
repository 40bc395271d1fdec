"""A small 3-D CNN digit classifier for clips, trained by the study on real clips: the judge of generated videos.

Why our own network beside the I3D: the Kinetics-400 I3D has never seen handwritten digits, so FVD on these clips
measures mostly low-level statistics; a classifier trained on the study's own real clips knows what a digit of
each class looks like. Its two numbers for a set of generated clips (the protocol, also in docs/diffusability.md):

- class accuracy: the fraction of samples generated for class k that it classifies as k (chance 1/K);
- Frechet distance (``metrics.fvd.frechet_distance``) between its penultimate features of the samples and of the
  real test clips, the FVD recipe in a feature space that knows the data ("FCD" below).

The network: four strided 3-D convolutions (16, 32, 64, 64 channels, GroupNorm + SiLU; 31-px receptive field, a
digit's size), the maximum over positions (a digit may be anywhere) and the mean over time: a 64-d feature; a
linear head. Input pixels ``(B, 3, T, H, W)`` in [-1, 1], any ``T >= 1`` and ``H, W >= 16``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 64


class ClipClassifier(nn.Module):
    """Pixels ``(B, 3, T, H, W)`` in [-1, 1] -> logits ``(B, num_classes)``; ``features`` gives ``(B, 64)``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        c_in = 3
        for c_out, stride in ((16, (1, 2, 2)), (32, (2, 2, 2)), (FEATURE_DIM, (2, 2, 2)), (FEATURE_DIM, (1, 2, 2))):
            layers += [nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).amax(dim=(3, 4)).mean(2)  # (B, 64): max over positions, mean over time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(clips: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int, seed: int = 0,
                     batch_size: int = 16, lr: float = 2e-3) -> ClipClassifier:
    """Train on ``clips`` ``(N, 3, T, H, W)`` in [-1, 1] with ``labels`` ``(N,)`` in ``0..K-1`` for ``steps`` Adam
    steps (batches drawn from epoch permutations seeded by ``seed``; a random shift of up to 4 px in each direction
    as augmentation, since the samples' digits may sit anywhere). Returns the model in eval mode on the CPU."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ClipClassifier(num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.randperm(len(clips), generator=g)
    pos = 0
    model.train()
    for _ in range(steps):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(clips), generator=g), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        shifts = torch.randint(-4, 5, (2,), generator=g).tolist()
        x = torch.roll(clips[idx], shifts=shifts, dims=(-2, -1))
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: ClipClassifier, clips: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes ``(N,)`` and features ``float64 (N, 64)`` of ``clips`` ``(N, 3, T, H, W)`` in [-1, 1]."""
    classes, feats = [], []
    device = next(model.parameters()).device
    for chunk in clips.split(batch_size):
        f = model.features(chunk.to(device).float())
        classes.append(model.head(f).argmax(1).cpu())
        feats.append(f.double().cpu())
    return torch.cat(classes).numpy(), torch.cat(feats).numpy()


def class_scores(model: ClipClassifier, clips: torch.Tensor, wanted: np.ndarray,
                 reference_features: np.ndarray) -> dict[str, float]:
    """``class_acc`` (fraction of ``clips`` classified as ``wanted``) and ``fcd`` (Frechet distance of their
    features to ``reference_features``, the real test clips')."""
    from pvvae_cli.metrics.fvd import fvd_from_features

    classes, feats = predict(model, clips)
    return {"class_acc": float((classes == np.asarray(wanted)).mean()),
            "fcd": fvd_from_features(reference_features, feats)}
