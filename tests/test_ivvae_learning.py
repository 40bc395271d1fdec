"""IV-VAE learns: ``ivvae-tiny`` overfits two fixed clips and beats the plain conv autoencoder at equal steps
(the pattern of ``test_learning.py``). Thresholds sit ~2 dB under the values measured on the build machine."""

import torch

from pvvae_cli.models.ivvae.model import IVVAE
from pvvae_cli.train.config import default_lr
from pvvae_cli.train.learning import PlainConvAE, overfit, vae_reconstruct
from pvvae_cli.train.synthetic import SyntheticClips

STEPS = 150


def test_ivvae_tiny_overfits_clips_and_beats_the_reference(one_thread):
    data = SyntheticClips("mix", frames=5, size=32, seed=0)
    x = torch.stack([data[i] for i in range(2)])  # (2, 3, 5, 32, 32): two latent frames each
    torch.manual_seed(0)
    vae = IVVAE.from_preset("ivvae-tiny").train()
    psnr = overfit(vae_reconstruct(vae), vae.parameters(), x, STEPS, default_lr("ivvae-tiny"))[-1].psnr
    torch.manual_seed(0)
    ref = PlainConvAE()  # one latent per frame: 4x the latent numbers of a t4 model after the first frame
    ref_psnr = overfit(ref, ref.parameters(), x, STEPS, 1e-3)[-1].psnr
    # measured: ivvae-tiny 21.1 dB (lr 3e-4; 18.9 dB at 1e-3), reference 18.9 dB
    assert psnr >= 19.5
    assert psnr > ref_psnr
