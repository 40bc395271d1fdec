import pytest
import torch
from conftest import NO_CPU_BF16

from pvvae_cli import PRESETS, VAEConfig, VideoVAE
from pvvae_cli.models.causal_conv import CausalConv3d, StreamState
from pvvae_cli.runtime.device import cpu_bf16_supported


def clip(t, h=64, w=64, b=1):
    return torch.rand(b, 3, t, h, w) * 2 - 1


@pytest.mark.parametrize("t", [1, 5, 9, 17])
def test_tiny_shapes(tiny, t):
    x = clip(t)
    with torch.no_grad():
        post = tiny.encode(x)
        y = tiny.decode(post.mode())
    assert post.mean.shape == (1, 8, 1 + (t - 1) // 4, 4, 4)
    assert post.logvar.shape == post.mean.shape
    assert post.sample().shape == post.mean.shape
    assert post.kl().shape == (1,)
    assert y.shape == x.shape


def test_small_forward_and_rectangular():
    vae = VideoVAE.from_preset("small").eval()
    assert 5e6 <= vae.num_parameters() <= 30e6
    with torch.no_grad():
        y, post = vae(clip(5, 32, 48), sample=False)
    assert post.mean.shape == (1, 32, 2, 2, 3)
    assert y.shape == (1, 3, 5, 32, 48)


def test_tiny_is_tiny():
    assert VideoVAE.from_preset("tiny").num_parameters() < 1_000_000


def test_t4s8_variant():
    vae = VideoVAE(VAEConfig(base_channels=8, channel_multipliers=(1, 2, 2, 2), latent_channels=4,
                             spatial_compression=8)).eval()
    with torch.no_grad():
        post = vae.encode(clip(9, 32, 32))
        assert post.mean.shape == (1, 4, 3, 4, 4)
        assert vae.decode(post.mode()).shape == (1, 3, 9, 32, 32)


@pytest.mark.slow
def test_base_builds_and_runs():
    vae = VideoVAE.from_preset("base").eval()
    assert vae.num_parameters() > 100e6
    if not cpu_bf16_supported():  # bf16 keeps this large model's forward short
        pytest.skip(f"built; the forward is not run: {NO_CPU_BF16}")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = vae(clip(5, 32, 32), sample=False)
    assert y.shape == (1, 3, 5, 32, 32)


def test_causality_exact(tiny):
    x = clip(17)
    x2 = x.clone()
    x2[:, :, 9:] = torch.rand_like(x2[:, :, 9:])  # change the last two 4-frame groups (frames 9..16)
    with torch.no_grad():
        z, z2 = tiny.encode(x).mode(), tiny.encode(x2).mode()
        # latent frames 0..2 cover frames 0..8: unchanged, bit for bit
        assert torch.equal(z[:, :, :3], z2[:, :, :3])
        assert not torch.equal(z[:, :, 3:], z2[:, :, 3:])
        z2b = z.clone()
        z2b[:, :, 3:] = torch.randn_like(z2b[:, :, 3:])
        y, y2 = tiny.decode(z), tiny.decode(z2b)
        assert torch.equal(y[:, :, :9], y2[:, :, :9])
        assert not torch.equal(y[:, :, 9:], y2[:, :, 9:])


@pytest.mark.parametrize("t", [1, 5, 17, 33])
@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_equals_one_pass(tiny, t, chunk):
    x = clip(t)
    with torch.no_grad():
        post = tiny.encode(x)
        pc = tiny.encode_chunked(x, chunk_latents=chunk)
        assert (pc.mean - post.mean).abs().max() <= 1e-4
        assert (pc.logvar - post.logvar).abs().max() <= 1e-4
        y = tiny.decode(post.mode())
        yc = tiny.decode_chunked(post.mode(), chunk_latents=chunk)
        assert yc.shape == y.shape
        assert (yc - y).abs().max() <= 1e-4


def test_stream_cache_bounded(tiny):
    """The cache holds a fixed number of frames per conv: its size does not grow with the clip."""
    sizes = []
    stream = tiny.new_stream()
    assert isinstance(stream, StreamState)
    x = clip(1 + 4 * 6)
    with torch.no_grad():
        tiny.encode_chunk(x[:, :, :1], stream)
        for i in range(1, x.shape[2], 4):
            tiny.encode_chunk(x[:, :, i : i + 4], stream)
            sizes.append(stream.nbytes())
    assert len(set(sizes)) == 1


def test_stream_chunks_equal_one_pass_and_are_checked(tiny):
    """encode_chunk/decode_chunk (the one streaming implementation) with uneven chunks equal one pass; a chunk of
    the wrong length is refused before it touches the stream."""
    x = clip(13)
    with torch.no_grad():
        post = tiny.encode(x)
        stream = tiny.new_stream()
        with pytest.raises(ValueError, match="first chunk of a stream must hold 1 frame"):
            tiny.encode_chunk(x[:, :, :5], stream)
        parts = [tiny.encode_chunk(x[:, :, a:b], stream) for a, b in ((0, 1), (1, 9), (9, 13))]
        with pytest.raises(ValueError, match="multiple of 4 frames"):
            tiny.encode_chunk(x[:, :, :3], stream)
        assert (torch.cat([p.mean for p in parts], 2) - post.mean).abs().max() <= 1e-4
        assert (torch.cat([p.logvar for p in parts], 2) - post.logvar).abs().max() <= 1e-4
        z = post.mode()
        y = tiny.decode(z)
        stream = tiny.new_stream()
        yc = torch.cat([tiny.decode_chunk(z[:, :, a:b], stream) for a, b in ((0, 2), (2, 3), (3, 4))], 2)
        assert (yc - y).abs().max() <= 1e-4
        with pytest.raises(ValueError, match="latents must be"):
            tiny.decode_chunk(z[:, :4], tiny.new_stream())


def test_causal_conv_strided_stream():
    conv = CausalConv3d(2, 3, 3, stride=(2, 1, 1))
    x = torch.randn(1, 2, 9, 4, 4)
    full = conv(x)
    assert full.shape[2] == 5
    state = StreamState()
    parts = [conv(x[:, :, :1], state), conv(x[:, :, 1:5], state), conv(x[:, :, 5:9], state)]
    assert torch.allclose(torch.cat(parts, 2), full, atol=1e-6)


def test_bad_shapes(tiny):
    with pytest.raises(ValueError, match="1 \\+ 4k.*nearest valid: 5 or 9"):
        tiny.encode(clip(6))
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny.encode(clip(5, 40, 64))
    with pytest.raises(ValueError, match="latents must be"):
        tiny.decode(torch.zeros(1, 7, 2, 4, 4))


def test_padding_latents(tiny):
    z = torch.randn(2, 8, 2, 4, 4)
    padded = tiny.pad_latents(z, 3)
    assert padded.shape == (2, 8, 5, 4, 4)
    assert torch.equal(padded[:, :, :2], z)
    g = tiny.pad_latents(z, 2, mode="gaussian", generator=torch.Generator().manual_seed(1))
    assert g.shape == (2, 8, 4, 4, 4)
    gauss = VideoVAE(PRESETS["tiny"].replace(padding_mode="gaussian"))
    assert gauss.padding_token is None
    with pytest.raises(ValueError, match="no learned padding"):
        gauss.pad_latents(z, 1, mode="learnable")


def test_latent_normalisation_roundtrip():
    cfg = PRESETS["tiny"].replace(latents_mean=tuple(range(8)), latents_std=(2.0,) * 8)
    vae = VideoVAE(cfg)
    z = torch.randn(1, 8, 2, 4, 4)
    assert torch.allclose(vae.denormalize_latents(vae.normalize_latents(z)), z, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"base_channels": 0},
        {"latent_channels": -1},
        {"temporal_compression": 3},
        {"spatial_compression": 12},
        {"temporal_compression": 32, "spatial_compression": 16},
        {"channel_multipliers": (1, 2)},
        {"padding_mode": "zeros"},
        {"latents_mean": (0.0,) * 3, "latents_std": (1.0,) * 3},
        {"latents_mean": (0.0,) * 64},
        {"latents_mean": (0.0,) * 64, "latents_std": (0.0,) * 64},
    ],
)
def test_invalid_config(bad):
    with pytest.raises(ValueError):
        VAEConfig(**bad)


def test_config_dict_roundtrip():
    for cfg in PRESETS.values():
        assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown VAEConfig keys"):
        VAEConfig.from_dict({**PRESETS["tiny"].to_dict(), "bogus": 1})
