"""diffusers' ``AutoencoderKLWan`` as a reference for the Wan tests (importing diffusers where the installed
torchvision lacks its compiled ops: the same shim as ``metrics.perceptual``)."""

from __future__ import annotations

import pytest
import torch

# Tiny configs of both architectures (seconds on a CPU), in diffusers' terms.
TINY_DIFFUSERS = {
    "wan2.1": dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                   latents_std=[1.5, 0.5, 2.0, 1.0]),
    "wan2.2": dict(base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                   patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 6, latents_std=[1.0] * 6),
}


def import_diffusers_wan():
    """``AutoencoderKLWan``, or skip the test when diffusers is not installed."""
    try:
        from diffusers import AutoencoderKLWan
    except ImportError as e:
        pytest.skip(f"diffusers not installed ({e}); pip install -e '.[test]'")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        from pvvae_cli.metrics.perceptual import shim_torchvision

        shim_torchvision("diffusers")
        from diffusers import AutoencoderKLWan
    return AutoencoderKLWan


def random_reference(name: str, seed: int = 0):
    """A diffusers ``AutoencoderKLWan`` of a tiny config with random weights, in eval mode.

    PyTorch's default init leaves the RMS-normalised activations near unit scale; the decoder's last conv is
    scaled down so that the decoded pixels stay mostly inside [-1, 1], where diffusers' clamp does not hide them.
    """
    cls = import_diffusers_wan()
    torch.manual_seed(seed)
    ref = cls(**TINY_DIFFUSERS[name]).eval()
    with torch.no_grad():
        for p in ref.parameters():  # non-trivial norm gains too (they start at one)
            if p.ndim <= 4 and p.shape[-1] == 1:
                p.mul_(1.0 + 0.2 * torch.randn_like(p))
        ref.decoder.conv_out.weight.mul_(0.3)
    return ref
