"""The codec depends on the model protocol only: a stand-in autoencoder (a few lines, no network, its own stream
object, t2s8 instead of PV-VAE's t4s16) goes through file encode/decode, streaming and tiling."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pvvae_cli.codec.pipeline import Codec, EncodeOptions
from pvvae_cli.codec.tiling import TileGrid, TileSpec
from pvvae_cli.frames import check_frame_count
from pvvae_cli.media.video_io import frames_to_tensor, read_clip
from pvvae_cli.media.writer import write_video
from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.models.protocol import AutoencoderConfig, VideoAutoencoder

CPU = torch.device("cpu")


@dataclass(frozen=True)
class PoolConfig:
    temporal_compression: int = 2
    spatial_compression: int = 8
    latent_channels: int = 3
    latents_mean: tuple[float, ...] | None = (0.1, -0.2, 0.0)
    latents_std: tuple[float, ...] | None = (0.5, 0.25, 1.0)

    @property
    def tag(self) -> str:
        return f"t{self.temporal_compression}s{self.spatial_compression}c{self.latent_channels}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PoolStream:
    started: bool = False


class PoolAE(torch.nn.Module):
    """Latents: average pool by (tc, s, s), the first frame pooled alone (causal); decoding: nearest upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.config = PoolConfig()

    def encode_chunk(self, x, stream):
        tc, s = self.config.temporal_compression, self.config.spatial_compression
        k = tc if stream.started else 1
        if x.shape[2] % k or (not stream.started and x.shape[2] != 1):
            raise ValueError(f"bad chunk {tuple(x.shape)}")
        stream.started = True
        mean = F.avg_pool3d(x, (k, s, s))
        return DiagonalGaussian(mean, torch.full_like(mean, -8.0))

    def decode_chunk(self, z, stream):
        self.check_latents(z)
        x = F.interpolate(z, scale_factor=(1, self.config.spatial_compression, self.config.spatial_compression))
        x = x.repeat_interleave(self.config.temporal_compression, dim=2)
        x = x if stream.started else x[:, :, self.config.temporal_compression - 1 :]  # latent frame 0 -> 1 frame
        stream.started = True
        return x

    def encode(self, x):
        self.check_pixels(x)
        stream = self.new_stream()
        first = self.encode_chunk(x[:, :, :1], stream)
        if x.shape[2] == 1:
            return first
        rest = self.encode_chunk(x[:, :, 1:], stream)
        return DiagonalGaussian(torch.cat([first.mean, rest.mean], 2), torch.cat([first.logvar, rest.logvar], 2))

    def decode(self, z):
        return self.decode_chunk(z, self.new_stream())

    def new_stream(self):
        return PoolStream()

    def check_pixels(self, x):
        check_frame_count(x.shape[2], self.config.temporal_compression)
        if x.shape[-2] % self.config.spatial_compression or x.shape[-1] % self.config.spatial_compression:
            raise ValueError(f"height and width must be multiples of 8, got {tuple(x.shape)}")

    def check_latents(self, z):
        if z.ndim != 5 or z.shape[1] != 3:
            raise ValueError(f"latents must be (B, 3, t, h, w), got {tuple(z.shape)}")

    def _stats(self, z):
        shape = (1, -1, 1, 1, 1)
        return torch.tensor(self.config.latents_mean).view(shape), torch.tensor(self.config.latents_std).view(shape)

    def normalize_latents(self, z):
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize_latents(self, z):
        mean, std = self._stats(z)
        return z * std + mean


def test_stand_in_and_video_vae_implement_the_protocol(tiny):
    assert isinstance(PoolAE(), VideoAutoencoder) and isinstance(PoolAE().config, AutoencoderConfig)
    assert isinstance(tiny, VideoAutoencoder) and isinstance(tiny.config, AutoencoderConfig)
    assert not isinstance(torch.nn.Conv3d(3, 3, 1), VideoAutoencoder)
    assert not hasattr(PoolAE(), "encoder") and not hasattr(PoolAE(), "decoder")


@pytest.mark.parametrize("tile", ["off", "on"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_codec_runs_a_stand_in_model(tmp_path, tile, chunk):
    """File encode (planned, streamed, tiled or not) and decode through the codec equal the stand-in's one-pass
    encode/decode; pooling is local, so even tiled results are exact."""
    frames = np.random.default_rng(0).integers(0, 256, (10, 34, 50, 3), dtype=np.uint8)
    write_video(tmp_path / "c.mp4", frames, fps=12)
    model = PoolAE()
    codec = Codec(model, "stand-in", CPU, torch.float32)
    opts = EncodeOptions(chunk_latents=chunk, tile=tile, tile_size=16, tile_overlap=8, save_moments=True)
    enc = codec.encode_file(tmp_path / "c.mp4", opts)
    plan = codec.plan_source(tmp_path / "c.mp4", opts).plan
    assert (plan.encoded_frames, plan.encoded_height, plan.encoded_width) == (11, 40, 56)  # 1 + 2k, multiples of 8
    pixels, _ = read_clip(tmp_path / "c.mp4")
    x = plan.apply(frames_to_tensor(pixels))
    x = torch.cat([x, x[:, -1:].expand(-1, plan.frame_pad, -1, -1)], dim=1)[None]  # (1, 3, 11, 40, 56)
    post = model.encode(x)
    assert enc.latent.shape == (3, 6, 5, 7) and enc.meta.normalized and enc.meta.model_tag == "t2s8c3"
    assert enc.meta.tiled == (tile == "on")
    assert (enc.latent - model.normalize_latents(post.mode())[0]).abs().max() <= 1e-5
    assert (enc.mean - post.mean[0]).abs().max() <= 1e-5

    assert codec.check_latent(enc.latent, enc.meta) == []
    out = np.concatenate(list(codec.decode_frames(enc.latent, enc.meta, tile=tile, tile_spec=TileSpec(16, 8),
                                                  chunk_latents=chunk)))
    assert out.shape == (10, 34, 50, 3)
    y = model.decode(post.mode())[0, :, :10, :34, :50]
    want = ((y.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).to(torch.uint8).numpy()
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1
    n = codec.decode_to_file(enc.latent, enc.meta, tmp_path / "out.mp4", tile=tile, tile_spec=TileSpec(16, 8))
    assert n == 10 and (tmp_path / "out.mp4").stat().st_size > 0


def test_tiling_streams_a_stand_in_model():
    model = PoolAE()
    x = torch.rand(1, 3, 5, 40, 56) * 2 - 1
    grid = TileGrid(5, 7, TileSpec(16, 8), 8)
    assert len(grid) > 1
    streams = grid.new_streams(model)
    assert all(isinstance(s, PoolStream) for s in streams)
    chunks = [grid.encode(model, x[:, :, a:b], streams) for a, b in ((0, 1), (1, 5))]
    z = torch.cat([c.mean for c in chunks], 2)
    assert (z - model.encode(x).mean).abs().max() <= 1e-6
    streams = grid.new_streams(model)
    y = torch.cat([grid.decode(model, z[:, :, i : i + 1], streams) for i in range(z.shape[2])], 2)
    assert (y - model.decode(z)).abs().max() <= 1e-6
