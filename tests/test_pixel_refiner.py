"""The decoder's pixel refiner (``models.pixel_refiner``, config ``refiner_channels``, ``train --refiner``)."""

import pytest
import torch

from pvvae_cli import VideoVAE
from pvvae_cli.eval.baselines import BlockPCA
from pvvae_cli.models.pixel_refiner import PixelRefiner
from pvvae_cli.models.pvvae.config import VAEConfig
from pvvae_cli.train.learning import overfit, psnr_db
from pvvae_cli.train.synthetic import SyntheticClips


def clips(n=2, frames=9, size=32, seed=0):
    data = SyntheticClips("mix", frames=frames, size=size, seed=seed)
    return torch.stack([data[i] for i in range(n)])


def refined_model(**overrides) -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE.from_preset("tiny", linear_shortcut=True, refiner_channels=8, refiner_blocks=2,
                                **overrides).eval()


def live(refiner: PixelRefiner) -> PixelRefiner:
    with torch.no_grad():
        refiner.conv_out.weight.normal_(0, 0.1)
    return refiner


def test_refiner_starts_as_the_identity_so_a_pca_model_is_still_the_pca_codec():
    x = clips()
    pca = BlockPCA.fit([x], 4, 16, 8)
    vae = refined_model()
    vae.init_shortcut_from_pca(pca)
    with torch.no_grad():
        y = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    assert (y - pca.reconstruct(x)).abs().max() < 1e-5


def test_refiner_is_group_causal_and_streams_exactly():
    """Frames of one latent group see each other (both ways), no group sees a later one, and chunked decoding
    equals one-pass decoding."""
    refiner = live(PixelRefiner(8, 2, group=4)).eval()
    x = clips(n=1)  # 9 frames: the first frame, then groups 1-4 and 5-8
    with torch.no_grad():
        y = refiner(x)
        later = x.clone()
        later[:, :, 8] = 0  # the last frame of the last group
        y2 = refiner(later)
        assert torch.equal(y2[:, :, :5], y[:, :, :5])  # earlier groups: untouched
        assert not torch.allclose(y2[:, :, 5], y[:, :, 5])  # its own group's first frame sees it
    vae = refined_model()
    live(vae.decoder.refiner)
    with torch.no_grad():
        z = vae.encode(clips()).mean
        assert torch.allclose(vae.decode_chunked(z, 1), vae.decode(z), atol=1e-5)
        assert torch.allclose(vae.decode_chunked(z, 2), vae.decode(z), atol=1e-5)


def test_refiner_config_round_trips_and_old_configs_load(tmp_path):
    vae = refined_model()
    live(vae.decoder.refiner)
    vae.save_pretrained(tmp_path / "w")
    again = VideoVAE.from_pretrained(tmp_path / "w")
    assert (again.config.refiner_channels, again.config.refiner_blocks) == (8, 2)
    assert torch.equal(again.decoder.refiner.conv_out.weight, vae.decoder.refiner.conv_out.weight)
    # A model without a refiner writes neither key, so its config.json and config hash are what they were.
    plain = VideoVAE.from_preset("tiny").config.to_dict()
    assert "refiner_channels" not in plain and "refiner_blocks" not in plain
    assert VAEConfig.from_dict(plain).refiner_channels == 0
    with pytest.raises(ValueError, match="refiner_channels"):
        VAEConfig(refiner_channels=-1)


def test_refiner_learns_to_correct_the_pca_code_on_held_out_clips(one_thread):
    """The refiner alone (everything else frozen, the PCA code fixed) trained on some clips improves the PCA
    reconstruction of *other* clips: what it learns is a correction of the code, not of the training clips."""
    pca = BlockPCA.fit([clips(n=16, seed=1)], 4, 16, 8)
    train_x, held_x = clips(n=32, seed=2), clips(n=4, seed=3)  # with 8 training clips it overfits them
    torch.manual_seed(0)
    refiner = PixelRefiner(16, 3, group=4).train()
    with torch.no_grad():
        train_pca, held_pca = pca.reconstruct(train_x), pca.reconstruct(held_x)
    before = psnr_db(held_pca, held_x)
    overfit(lambda x: refiner(train_pca), refiner.parameters(), train_x, 100, 1e-3)
    with torch.no_grad():
        after = psnr_db(refiner(held_pca), held_x)
    # measured: 20.50 -> 21.34 dB on the held-out clips
    assert after > before + 0.4, (before, after)


def test_train_refiner_builds_it_and_init_runs_refuse_it(tmp_path):
    from conftest import tiny_train_config

    from pvvae_cli.train.config import ConfigError
    from pvvae_cli.train.trainer import train

    result = train(tiny_train_config(steps=2, shortcut_pca=8, refiner=8), tmp_path / "run", quiet=True)
    assert result.status == "finished"
    vae = VideoVAE.from_pretrained(tmp_path / "run" / "weights")
    assert vae.config.refiner_channels == 8 and vae.config.linear_shortcut
    assert vae.decoder.refiner.conv_out.weight.abs().sum() > 0  # it trained
    with pytest.raises(ConfigError, match="use it with --preset"):
        tiny_train_config(steps=1, refiner=8, preset=None, init=str(tmp_path / "run" / "weights"))
