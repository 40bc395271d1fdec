"""Learning is a tested property: the network must overfit a few fixed images and clips, beat a plain conv
autoencoder at equal steps, and the test setup must tell a network that does not learn from one that does.

Figures of the full-size check (64x64, 300 steps, 17-frame clips) are printed by ``benchmarks/bench_learning.py``;
these are the small, seconds-long versions. Thresholds sit ~2 dB under the values measured on the build machine.
"""

import pytest
import torch

from pvvae_cli import VideoVAE
from pvvae_cli.train.config import default_lr
from pvvae_cli.train.learning import PlainConvAE, overfit, pytorch_default_init_, vae_reconstruct
from pvvae_cli.train.synthetic import SyntheticClips

STEPS = 150


def clips(frames: int, n: int, size: int = 32) -> torch.Tensor:
    data = SyntheticClips("mix", frames=frames, size=size, seed=0)
    return torch.stack([data[i] for i in range(n)])


def tiny_psnr(x: torch.Tensor, old_init: bool = False) -> float:
    torch.manual_seed(0)
    vae = VideoVAE.from_preset("tiny").train()
    if old_init:
        pytorch_default_init_(vae)
    return overfit(vae_reconstruct(vae), vae.parameters(), x, STEPS, default_lr("tiny"))[-1].psnr


def reference_psnr(x: torch.Tensor) -> float:
    torch.manual_seed(0)
    ref = PlainConvAE()
    return overfit(ref, ref.parameters(), x, STEPS, 1e-3)[-1].psnr


@pytest.fixture(scope="module")
def images():
    return clips(frames=1, n=4)


def test_tiny_overfits_images_and_beats_the_reference(images, one_thread):
    # measured: tiny 22.1 dB, reference 20.0 dB (mean colour of these images: ~12 dB)
    psnr = tiny_psnr(images)
    assert psnr >= 20.0
    assert psnr > reference_psnr(images)


def test_tiny_overfits_clips_and_beats_the_reference(one_thread):
    x = clips(frames=5, n=2)
    # measured: tiny 21.1 dB, reference (one latent per frame: 4x the latent numbers) 18.9 dB
    psnr = tiny_psnr(x)
    assert psnr >= 19.0
    assert psnr > reference_psnr(x)


def test_the_learning_check_fails_for_the_old_initialisation(images, one_thread):
    """The network as it was (PyTorch's default conv init) stayed near the mean colour: the threshold above must
    reject it, or the learning tests could not catch that defect again. Measured: 12.7 dB."""
    assert tiny_psnr(images, old_init=True) < 16.0


def test_pca_shortcut_starts_at_the_linear_code_and_learns_past_it(one_thread):
    """tiny with the linear block shortcut fitted by block PCA on other clips of the same kind (``--shortcut-pca``
    fits it on training clips) starts at that PCA codec's PSNR and ends well above it and above the plain tiny at
    equal steps, with the shortcut trained and with it frozen (``--freeze-shortcut``)."""
    from pvvae_cli.eval.baselines import BlockPCA
    from pvvae_cli.train.build import trainable_parameters
    from pvvae_cli.train.learning import psnr_db

    x = clips(frames=5, n=2)
    torch.manual_seed(0)
    vae = VideoVAE.from_preset("tiny", linear_shortcut=True).train()
    other = SyntheticClips("mix", frames=5, size=32, seed=1)
    pca = BlockPCA.fit([other[i] for i in range(16)], 4, 16, vae.config.latent_channels)
    vae.init_shortcut_from_pca(pca)
    curve = overfit(vae_reconstruct(vae), vae.parameters(), x, STEPS, default_lr("tiny"), log_steps=(0,))
    start = psnr_db(pca.reconstruct(x), x)
    assert abs(curve[0].psnr - start) < 0.3  # step 0 is the PCA codec (the network's outputs start at zero)
    # measured: 16.35 dB at step 0 (the PCA codec), 42.77 dB after 150 steps (plain tiny: 21.1 dB)
    assert curve[-1].psnr > start + 3
    plain = tiny_psnr(x)
    assert curve[-1].psnr > plain + 1
    # --freeze-shortcut: the network alone learns past the fixed PCA code (measured: 16.35 -> 30.87 dB; the plain
    # conv reference reaches 18.9 dB at these steps)
    torch.manual_seed(0)
    frozen = VideoVAE.from_preset("tiny", linear_shortcut=True).train()
    frozen.init_shortcut_from_pca(pca)
    params = trainable_parameters(frozen, "video", freeze_shortcut=True)
    frozen_curve = overfit(vae_reconstruct(frozen), params, x, STEPS, default_lr("tiny"), log_steps=(0,))
    assert abs(frozen_curve[0].psnr - start) < 0.3
    assert frozen_curve[-1].psnr > start + 3 and frozen_curve[-1].psnr > plain + 1
