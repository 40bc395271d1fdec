"""The predictive objective: group partition, drop sampling, encode-prefix/pad/decode, padding tokens."""

import random

import pytest
import torch
from conftest import random_clip, tiny_train_config

from pvvae_cli import VideoVAE
from pvvae_cli.train.objective import (
    PredictiveVAE,
    kept_frames,
    max_dropped,
    num_groups,
    predictive_forward,
    sample_num_dropped,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_group_partition():
    assert num_groups(1) == 1
    assert num_groups(5) == 2
    assert num_groups(17) == 5
    assert [kept_frames(17, k) for k in range(5)] == [17, 13, 9, 5, 1]
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        num_groups(16)
    with pytest.raises(ValueError, match="0..4"):
        kept_frames(17, 5)


@pytest.mark.parametrize(
    "groups, ratio, expected",
    [(5, 1.0, {0, 1, 2, 3, 4}), (5, 0.5, {0, 1, 2}), (5, 0.75, {0, 1, 2, 3}), (5, 0.0, {0}), (1, 1.0, {0}),
     (3, 0.49, {0})],
)
def test_drop_sampling_range(groups, ratio, expected):
    rng = random.Random(0)
    draws = [sample_num_dropped(groups, ratio, rng) for _ in range(3000)]
    assert set(draws) == expected  # every allowed k occurs (k = 0 included), nothing outside: r is respected
    assert max_dropped(groups, ratio) == max(expected)
    # roughly uniform over the allowed values
    counts = [draws.count(k) for k in sorted(expected)]
    assert max(counts) - min(counts) < 0.1 * len(draws)
    # the first frame is always kept
    assert all(kept_frames(1 + 4 * (groups - 1), k) >= 1 for k in draws)


def test_drop_sampling_is_reproducible():
    rng1, rng2 = random.Random(3), random.Random(3)
    assert [sample_num_dropped(5, 1.0, rng1) for _ in range(50)] == [sample_num_dropped(5, 1.0, rng2)
                                                                    for _ in range(50)]
    with pytest.raises(ValueError):
        max_dropped(5, 1.5)


def test_predictive_forward_encodes_only_the_prefix(tiny):
    x = random_clip(2, 3, 9, 32, 32)
    out = predictive_forward(tiny, x, dropped=2, sample=False)
    assert out.kept == 1 and out.dropped == 2
    assert out.recon.shape == x.shape  # the full clip is decoded
    assert out.posterior.mean.shape == (2, 8, 1, 2, 2)  # latents of the kept first frame only
    # frames after the kept prefix cannot influence the output
    y = x.clone()
    y[:, :, 1:] = torch.rand_like(y[:, :, 1:])
    assert torch.equal(predictive_forward(tiny, y, dropped=2, sample=False).recon, out.recon)
    # with nothing dropped it is a plain reconstruction
    full = predictive_forward(tiny, x, dropped=0, sample=False)
    torch.testing.assert_close(full.recon, tiny.decode(tiny.encode(x).mode()))


def test_learnable_padding_gets_gradients():
    vae = VideoVAE.from_preset("tiny").train()
    model = PredictiveVAE(vae)
    x = random_clip(1, 3, 9, 32, 32)
    out = model(x, dropped=1)
    ((out.recon - x) ** 2).mean().backward()
    assert vae.padding_token.grad is not None and vae.padding_token.grad.abs().sum() > 0
    # k = 0: the token is tied into the graph with a zero gradient (so DDP sees every parameter)
    vae.zero_grad()
    out = model(x, dropped=0)
    ((out.recon - x) ** 2).mean().backward()
    assert vae.padding_token.grad is not None and vae.padding_token.grad.abs().sum() == 0


def test_learnable_padding_is_saved_and_loaded(tmp_path):
    vae = VideoVAE.from_preset("tiny")
    with torch.no_grad():
        vae.padding_token.copy_(torch.randn(8))
    vae.save_pretrained(tmp_path / "w")
    loaded = VideoVAE.from_pretrained(tmp_path / "w")
    assert torch.equal(loaded.padding_token, vae.padding_token)
    z = torch.randn(1, 8, 2, 2, 2)
    padded = loaded.pad_latents(z, 3)
    assert padded.shape == (1, 8, 5, 2, 2)
    assert torch.equal(padded[:, :, 2:], vae.padding_token.view(1, 8, 1, 1, 1).expand(1, 8, 3, 2, 2))


def test_gaussian_padding_run_builds_a_gaussian_model(tmp_path):
    from pvvae_cli.train.build import build_vae

    cfg = tiny_train_config(padding="gaussian")
    vae = build_vae(cfg)
    assert vae.padding_token is None and vae.config.padding_mode == "gaussian"
    x = random_clip(1, 3, 9, 32, 32)
    a = predictive_forward(vae, x, 1, sample=False, generator=torch.Generator().manual_seed(1)).recon
    b = predictive_forward(vae, x, 1, sample=False, generator=torch.Generator().manual_seed(1)).recon
    c = predictive_forward(vae, x, 1, sample=False, generator=torch.Generator().manual_seed(2)).recon
    assert torch.equal(a, b) and not torch.equal(a, c)
    # and back: gaussian weights trained on with learnable padding get a (zero) token, other tensors kept
    vae.save_pretrained(tmp_path / "g")
    cfg2 = tiny_train_config(preset=None, init=str(tmp_path / "g"))
    vae2 = build_vae(cfg2)
    assert vae2.padding_token is not None and torch.equal(vae2.padding_token, torch.zeros(8))
    assert torch.equal(vae2.encoder.conv_in.weight, vae.encoder.conv_in.weight)
