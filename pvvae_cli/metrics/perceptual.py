"""LPIPS loading, shared by the training loss and the ``eval`` metric.

``lpips`` imports torchvision. Where the installed torchvision has no compiled ops for this torch (e.g. a
CUDA torchvision next to a CPU torch), its import fails on ``torchvision::nms``; defining the two missing op
schemas first lets its pure-Python parts (the models lpips needs) import. On a normal machine nothing is
patched. The AlexNet/VGG backbone weights are downloaded by torchvision on first use into
``$TORCH_HOME/hub/checkpoints``; without them there is no real LPIPS, and we say so instead of guessing.
"""

from __future__ import annotations

import sys
import warnings

import torch

from pvvae_cli.errors import PvvaeError


class MetricUnavailable(PvvaeError, RuntimeError):
    """A metric or loss whose network weights cannot be had here; the message says why and how to fix it."""


_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def import_lpips():
    """Import and return the ``lpips`` module, shimming a torchvision without compiled ops if needed."""
    try:
        import lpips
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        shim_torchvision("lpips")
        import lpips
    return lpips


def shim_torchvision(*dependents: str) -> None:
    """After an import failed on ``torchvision::nms``: forget the half-imported torchvision (and the packages named
    in ``dependents``, e.g. ``lpips``, ``diffusers``) and define the two op schemas, so the next import works."""
    prefixes = ("torchvision", *dependents)
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]
    for op in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass  # already defined by an earlier attempt


def load_lpips(net: str = "alex", random_backbone: bool = False) -> torch.nn.Module:
    """An ``lpips.LPIPS`` module in eval mode with frozen parameters; inputs ``(N, 3, H, W)`` in [-1, 1].

    ``random_backbone=True`` builds it with a randomly initialised backbone: only for testing the wiring,
    never a measurement. Otherwise raises ``MetricUnavailable`` if the backbone weights cannot be loaded.
    """
    if net not in _BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose one of {sorted(_BACKBONE_FILES)}")
    lpips = import_lpips()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation chatter
        try:
            model = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False)
        except Exception as e:  # URLError, HTTPError, OSError: the backbone download failed
            where = f"{torch.hub.get_dir()}/checkpoints/{_BACKBONE_FILES[net]}"
            raise MetricUnavailable(
                f"LPIPS ({net}) needs torchvision's ImageNet backbone weights, which could not be loaded "
                f"({e.__class__.__name__}: {e}); put {_BACKBONE_FILES[net]} at {where} (or allow the download)"
            ) from e
    model.eval().requires_grad_(False)
    return model
