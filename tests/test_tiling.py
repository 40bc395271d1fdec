import math

import pytest
import torch
import torch.nn.functional as F

from pvvae_cli.codec.tiling import TileGrid, TileSpec, tile_starts, use_tiling


def psnr(a, b):
    """PSNR of pixels in [-1, 1] (peak-to-peak 2)."""
    return 10 * math.log10(4.0 / F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item())


def smooth_clip(t, h, w):
    """(1, 3, t, h, w) in [-1, 1]: moving sinusoidal patterns (enough structure for a meaningful comparison)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = [torch.sin(9 * xx + 0.4 * i + c) * torch.cos(7 * yy - 0.2 * i) for i in range(t) for c in range(3)]
    return (0.8 * torch.stack(frames).view(t, 3, h, w).transpose(0, 1))[None]


def test_tile_starts_cover_with_overlap():
    assert tile_starts(10, 32, 8) == [0]
    assert tile_starts(32, 32, 8) == [0]
    for length in (33, 56, 57, 100):
        starts = tile_starts(length, 32, 8)
        assert starts[0] == 0 and starts[-1] + 32 == length
        assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:], strict=False))  # overlap >= 8


def test_auto_threshold():
    spec = TileSpec(512, 128)
    assert not use_tiling("auto", 512, 512, spec) and use_tiling("auto", 528, 256, spec)
    assert use_tiling("on", 64, 64, spec) and not use_tiling("off", 2048, 2048, spec)
    with pytest.raises(ValueError, match="multiples of 16"):
        TileSpec(500, 128).validate(16)
    with pytest.raises(ValueError, match="at most half"):
        TileSpec(256, 160).validate(16)


@pytest.mark.parametrize("h,w", [(20, 56), (45, 70)])
def test_blend_weights_consistent_in_latent_and_pixel_space(h, w):
    """The pixel-space blend is the latent-space blend at 16x resolution, over the very same region (averaging
    the pixel weights over each 16x16 block gives the latent weights exactly), and weights sum to > 0."""
    grid = TileGrid(h, w, TileSpec(512, 128), 16)
    assert len(grid) > 1
    lat_w, lat_total = grid.weights(1)
    pix_w, pix_total = grid.weights(16)
    for lw, pw in zip(lat_w, pix_w, strict=True):
        assert pw.shape == (lw.shape[0] * 16, lw.shape[1] * 16)
        assert torch.allclose(F.avg_pool2d(pw[None, None], 16)[0, 0], lw, atol=1e-6)
    assert lat_total.min() > 0 and pix_total.min() > 0
    # blending a constant gives back the constant: the weights are normalised everywhere
    out = grid.run(lambda a, s: a, torch.ones(1, 1, 1, h * 16, w * 16), None, in_scale=16, out_scale=16)
    assert torch.allclose(out, torch.ones_like(out))


def test_tiled_vs_untiled_default_tiles(tiny):
    """At the default tile settings (512 px tiles, 128 px overlap), tiled and untiled encode and decode agree to
    >= 40 dB, and so does the band around the seam (no visible seam)."""
    x = smooth_clip(1, 512, 896)  # two tiles side by side, overlapping by exactly 128 px
    grid = TileGrid(512 // 16, 896 // 16, TileSpec(512, 128), 16)
    assert [b[1] for b in grid.boxes] == [0, 24]
    with torch.inference_mode():
        z = tiny.encode(x).mean
        z_tiled = grid.encode(tiny, x, grid.new_streams(tiny)).mean
        y = tiny.decode(z)
        y_tiled = grid.decode(tiny, z, grid.new_streams(tiny))
        y_from_tiled_z = tiny.decode(z_tiled)
    seam = slice(24 * 16 - 64, 32 * 16 + 64)  # the overlap and 64 px either side
    for out in (y_tiled, y_from_tiled_z):
        assert psnr(out, y) >= 40 and psnr(out[..., seam], y[..., seam]) >= 40
        # No visible seam: the tiled-minus-untiled difference never jumps by a grey level (2/255 in [-1, 1])
        # between neighbouring pixel columns (a hard cut between the tiles does, here by ~4 grey levels).
        diff = (out.clamp(-1, 1) - y.clamp(-1, 1))[0]
        assert (diff[..., 1:] - diff[..., :-1]).abs().mean(dim=(0, 1, 2)).max() < 2 / 255


def test_tiling_composes_with_streaming(tiny):
    """Chunked (one stream per tile) tiled encode/decode equals the one-pass tiled result."""
    x = smooth_clip(9, 64, 96)
    grid = TileGrid(4, 6, TileSpec(64, 32), 16)
    assert len(grid) == 2
    with torch.inference_mode():
        one = grid.encode(tiny, x)  # one pass per tile
        streams = grid.new_streams(tiny)
        chunks = [grid.encode(tiny, x[:, :, a:b], streams) for a, b in ((0, 1), (1, 5), (5, 9))]
        assert (torch.cat([c.mean for c in chunks], 2) - one.mean).abs().max() <= 1e-4
        assert (torch.cat([c.logvar for c in chunks], 2) - one.logvar).abs().max() <= 1e-4
        z = one.mean
        ydec = grid.decode(tiny, z)
        streams = grid.new_streams(tiny)
        parts = [grid.decode(tiny, z[:, :, i : i + 1], streams) for i in range(z.shape[2])]
        assert (torch.cat(parts, 2) - ydec).abs().max() <= 1e-4
