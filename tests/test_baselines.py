"""The reference codecs of ``eval.baselines`` (the floor a trained model must clear)."""

import pytest
import torch

from pvvae_cli.eval.baselines import BlockPCA, bicubic_reconstruct, bicubic_size
from pvvae_cli.train.learning import psnr_db
from pvvae_cli.train.synthetic import SyntheticClips


def clips(n=3, frames=9, size=32, seed=0):
    data = SyntheticClips("mix", frames=frames, size=size, seed=seed)
    return torch.stack([data[i] for i in range(n)])


def test_block_pca_with_every_component_is_exact():
    x = clips(n=2, frames=5, size=16)
    pca = BlockPCA.fit([x], temporal_compression=4, spatial_compression=4, components=3 * 4 * 4)  # first-frame dim
    # 48 components span the first frame's 48-dim blocks exactly; the 4-frame blocks (192 dims) only partly.
    y = pca.reconstruct(x)
    assert torch.allclose(y[:, :, :1], x[:, :, :1], atol=1e-4)
    assert psnr_db(y[:, :, 1:], x[:, :, 1:]) > 25


def test_block_pca_improves_with_components_and_round_trips(tmp_path):
    train, held = clips(n=4, seed=0), clips(n=2, seed=1)
    scores = []
    for c in (4, 16, 64):
        pca = BlockPCA.fit([train[i] for i in range(4)], 4, 8, c)
        scores.append(psnr_db(pca.reconstruct(held), held))
    assert scores[0] < scores[1] < scores[2]
    pca.save(tmp_path / "pca.safetensors")
    again = BlockPCA.load(tmp_path / "pca.safetensors")
    assert again.tag == "t4s8c64" and torch.equal(again.reconstruct(held), pca.reconstruct(held))


def test_block_pca_rejects_bad_clips():
    pca = BlockPCA.fit([clips(n=1)], 4, 8, 4)
    with pytest.raises(ValueError, match="frame"):
        pca.reconstruct(clips(n=1, frames=8))
    with pytest.raises(ValueError, match="multiples of 8"):
        pca.reconstruct(clips(n=1, size=20))


def test_bicubic_keeps_the_latent_budget():
    assert bicubic_size(64, 64, 4, 16, 48) == (8, 8)  # 48 numbers per 4x16x16 block = 12 per frame = 2x2x3
    assert bicubic_size(256, 128, 4, 16, 12) == (16, 8)
    x = clips(n=1, size=32)
    y = bicubic_reconstruct(x, bicubic_size(32, 32, 4, 8, 48))
    assert y.shape == x.shape and y.abs().max() <= 1
    assert psnr_db(y, x) < psnr_db(bicubic_reconstruct(x, (16, 16)), x)  # more numbers kept, closer


def test_block_pca_of_images_codes_images_only():
    images = clips(n=4, frames=1)
    pca = BlockPCA.fit([images], 4, 8, 8)
    assert pca.rest is None and pca.reconstruct(images).shape == images.shape
    with pytest.raises(ValueError, match="images only"):
        pca.reconstruct(clips(n=1))
