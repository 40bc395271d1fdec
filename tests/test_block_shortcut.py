"""The linear block shortcut of PV-VAE (``models.block_shortcut``, config ``linear_shortcut``)."""

import pytest
import torch

from pvvae_cli import VideoVAE
from pvvae_cli.eval.baselines import BlockPCA
from pvvae_cli.models.pvvae.config import VAEConfig
from pvvae_cli.train.synthetic import SyntheticClips


def clips(n=3, frames=9, size=32, seed=0):
    data = SyntheticClips("mix", frames=frames, size=size, seed=seed)
    return torch.stack([data[i] for i in range(n)])


def shortcut_model(**overrides) -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE.from_preset("tiny", linear_shortcut=True, **overrides).eval()


def test_pca_initialised_model_is_the_pca_codec():
    x = clips()
    pca = BlockPCA.fit([x], 4, 16, 8)
    vae = shortcut_model()
    vae.init_shortcut_from_pca(pca)
    with torch.no_grad():
        y = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    assert (y - pca.reconstruct(x)).abs().max() < 1e-5
    assert (y - x).abs().max() > 0.05  # a lossy codec, not the identity


def test_shortcut_is_causal_and_streams_exactly():
    vae = shortcut_model()
    with torch.no_grad():  # make the network's branches live too, so both paths are checked
        for p in (vae.encoder.conv_out.weight, vae.decoder.conv_out.weight):
            p.normal_(0, 0.05)
    x = clips(n=2)
    with torch.no_grad():
        post = vae.encode(x)
        assert torch.allclose(vae.encode_chunked(x).mean, post.mean, atol=1e-5)
        z = post.mean
        assert torch.allclose(vae.decode_chunked(z), vae.decode(z), atol=1e-5)
        x2 = x.clone()
        x2[:, :, 5:] = 0  # change the last group: earlier latent frames must not move
        assert torch.equal(vae.encode(x2).mean[:, :, :2], post.mean[:, :, :2])


def test_shortcut_weights_round_trip_and_old_configs_load(tmp_path):
    vae = shortcut_model()
    vae.init_shortcut_from_pca(BlockPCA.fit([clips()], 4, 16, 8))
    vae.save_pretrained(tmp_path / "w")
    again = VideoVAE.from_pretrained(tmp_path / "w")
    assert again.config.linear_shortcut and torch.equal(again.encoder.shortcut.rest, vae.encoder.shortcut.rest)
    old = VAEConfig.from_dict({k: v for k, v in vae.config.to_dict().items() if k != "linear_shortcut"})
    assert old.linear_shortcut is False  # config.json files from before the option build the plain network


def test_init_from_pca_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="no linear shortcut"):
        VideoVAE.from_preset("tiny").init_shortcut_from_pca(BlockPCA.fit([clips()], 4, 16, 8))
    with pytest.raises(ValueError, match="does not match"):
        shortcut_model().init_shortcut_from_pca(BlockPCA.fit([clips()], 4, 16, 4))


def test_train_shortcut_pca_starts_at_the_pca_codec(tmp_path):
    """``--shortcut-pca N``: the run's model has the shortcut, fitted on N training clips before step 0, so the
    step-0 validation is far above the same preset without it (with EMA too: the average starts from the fitted
    weights, not the random ones); --init runs refuse the option."""
    from conftest import read_metrics, tiny_train_config

    from pvvae_cli.train.config import ConfigError
    from pvvae_cli.train.trainer import train

    plain = train(tiny_train_config(steps=1, val_every=1), tmp_path / "plain", quiet=True)
    fitted = train(tiny_train_config(steps=1, val_every=1, shortcut_pca=8), tmp_path / "pca", quiet=True)
    ema = train(tiny_train_config(steps=1, val_every=1, shortcut_pca=8, ema_decay=0.999), tmp_path / "ema", quiet=True)
    assert plain.status == fitted.status == ema.status == "finished"
    step0 = {name: read_metrics(tmp_path / name, "val")[0]["psnr_recon"] for name in ("plain", "pca", "ema")}
    assert step0["pca"] > step0["plain"] + 3, step0
    assert abs(step0["ema"] - step0["pca"]) < 0.01, step0
    assert VideoVAE.from_pretrained(tmp_path / "pca" / "weights").config.linear_shortcut
    with pytest.raises(ConfigError, match="use it with --preset"):
        tiny_train_config(steps=1, shortcut_pca=8, preset=None, init=str(tmp_path / "pca" / "weights"))


def test_freeze_shortcut_keeps_the_pca_code_bit_identical(tmp_path):
    """``--freeze-shortcut``: the shortcut's tensors come out of training bit-identical; without it they move; a
    model without a shortcut refuses the option with the fix."""
    from conftest import tiny_train_config

    from pvvae_cli.train.build import fit_shortcut
    from pvvae_cli.train.config import ConfigError
    from pvvae_cli.train.data import make_dataset
    from pvvae_cli.train.trainer import train

    def shortcut_and_rest(name):
        state = VideoVAE.from_pretrained(tmp_path / name / "weights").state_dict()
        return ({k: v for k, v in state.items() if ".shortcut." in k},
                {k: v for k, v in state.items() if ".shortcut." not in k})

    for name, freeze in (("frozen", True), ("free", False)):
        train(tiny_train_config(steps=3, shortcut_pca=8, freeze_shortcut=freeze, lr=1e-3), tmp_path / name,
              quiet=True)
    # The frozen run's shortcut is still the PCA fit of its training clips (the free run started there too and
    # moved away from it).
    cfg = tiny_train_config(steps=3, shortcut_pca=8)
    start = shortcut_model()
    fit_shortcut(start, make_dataset(cfg.data, cfg.frames, cfg.size, seed=cfg.seed), 8)
    fit_sc = {k: v for k, v in start.state_dict().items() if ".shortcut." in k}
    (frozen_sc, _), (free_sc, _) = shortcut_and_rest("frozen"), shortcut_and_rest("free")
    assert set(frozen_sc) == set(fit_sc) and len(fit_sc) == 8
    assert all(torch.equal(frozen_sc[k], fit_sc[k]) for k in fit_sc)
    assert any(not torch.allclose(free_sc[k], fit_sc[k], atol=1e-6) for k in fit_sc)
    with pytest.raises(ConfigError, match="no linear block shortcut"):
        train(tiny_train_config(steps=1, freeze_shortcut=True), tmp_path / "plain", quiet=True)
