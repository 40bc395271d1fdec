"""Training data: synthetic clips, the folder clip dataset, sharded resumable sampling, data errors."""

import numpy as np
import pytest
import torch

from pvvae_cli.media.writer import write_video
from pvvae_cli.train.data import (
    ClipDataset,
    DataError,
    StreamSampler,
    collate_clips,
    make_dataset,
    make_loader,
)
from pvvae_cli.train.synthetic import KINDS, SyntheticClips


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_clips_are_deterministic_and_moving(kind):
    ds = SyntheticClips(kind, frames=9, size=32, seed=3)
    a = ds[5]
    assert a.shape == (3, 9, 32, 32) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, SyntheticClips(kind, frames=9, size=32, seed=3)[5])  # pure function of (seed, index)
    assert not torch.equal(a, ds[6])
    assert not torch.equal(a, SyntheticClips(kind, frames=9, size=32, seed=4)[5])
    motion = (a[:, 1:] - a[:, :-1]).abs().mean()
    assert motion > 1e-3  # something moves
    assert SyntheticClips(kind, frames=1, size=48, seed=0)[0].shape == (3, 1, 48, 48)


def test_synthetic_motion_is_predictable():
    # Constant velocity: a shape's displacement between frames is (nearly) the same all along the clip.
    ds = SyntheticClips("digits", frames=9, size=64, seed=0)
    clip = ds.clip(0).mean(-1)  # (T, H, W) brightness
    centroids = []
    for frame in clip:
        mask = frame > 0.5
        ys, xs = np.nonzero(mask)
        centroids.append((ys.mean(), xs.mean()))
    steps = np.diff(np.array(centroids), axis=0)
    assert np.abs(steps).max() > 0.5  # it moves
    # constant velocity: the step changes by at most the 1-pixel rounding, except where the digit bounces
    assert (np.abs(np.diff(steps, axis=0)) <= 1).mean() >= 0.75


def test_bounce_is_linear_motion_reflected_at_the_borders():
    from pvvae_cli.train.synthetic import _bounce

    t = np.arange(6, dtype=np.float64)
    pos = _bounce(np.array([2.0, 5.0]), np.array([1.0, 2.0]), t, np.zeros(2), np.array([10.0, 10.0]))
    assert np.allclose(pos[:, 0], 2 + t)  # far from the walls: p0 + v t
    assert np.allclose(pos[:, 1], [5, 7, 9, 9, 7, 5])  # reflected at 10


def test_stream_sampler_shards_and_resumes():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    r0, r1 = take(StreamSampler(0, 0, 2), 5), take(StreamSampler(0, 1, 2), 5)
    assert sorted(r0 + r1) == list(range(10))  # every position exactly once across ranks
    assert take(StreamSampler(3, 1, 2), 2) == r1[3:5]  # resuming after 3 consumed samples continues the stream


def _write_videos(root):
    """Two good videos, a too-short one, a corrupt one, an image; frame i of a.mp4 has gray level 8 i."""
    root.mkdir(parents=True, exist_ok=True)
    levels = (np.arange(30) * 8).astype(np.uint8)
    write_video(root / "a.mp4", np.broadcast_to(levels[:, None, None, None], (30, 48, 64, 3)).copy(), 10)
    rng = np.random.default_rng(0)
    write_video(root / "sub" / "b.mp4", rng.integers(0, 255, (20, 40, 40, 3), dtype=np.uint8), 10)
    write_video(root / "short.mp4", np.zeros((3, 32, 32, 3), np.uint8), 10)
    (root / "broken.mp4").write_bytes(b"this is not a video" * 10)
    write_video(root / "still.png", np.full((1, 40, 56, 3), 200, np.uint8), 0)
    (root / "notes.txt").write_text("ignored")


def test_clip_dataset_windows_crops_and_skips(tmp_path):
    _write_videos(tmp_path / "d")
    ds = ClipDataset([tmp_path / "d"], frames=5, size=32, frame_stride=2, seed=1)
    assert sorted(p.name for p in ds.files) == ["a.mp4", "b.mp4", "broken.mp4", "short.mp4"]  # no images for video
    items = [ds[i] for i in range(8)]
    for x, _ in items:
        assert x.shape == (3, 5, 32, 32) and -1 <= x.min() and x.max() <= 1
    skipped = {msg.split(": ")[0].rsplit("/", 1)[-1] for _, s in items for msg in s}
    assert skipped == {"broken.mp4", "short.mp4"}  # unreadable and too short, reported, not fatal
    # determinism: a fresh dataset (another worker, a resumed run) gives the same samples
    again = ClipDataset([tmp_path / "d"], frames=5, size=32, frame_stride=2, seed=1)
    for i in range(8):
        assert torch.equal(again[i][0], items[i][0])
    # frame stride: consecutive frames of a.mp4 are 2 source frames apart (gray levels step by 16)
    a_items = [x for x, _ in items if x.std(dim=(2, 3)).max() < 0.05]  # flat frames: a.mp4
    assert a_items, "expected at least one window from a.mp4"
    gray = (a_items[0].mean(dim=(0, 2, 3)) + 1) * 127.5
    assert np.allclose(np.diff(gray.numpy()), 16, atol=3)


def test_clip_dataset_image_stage_uses_images(tmp_path):
    _write_videos(tmp_path / "d")
    ds = ClipDataset([tmp_path / "d"], frames=1, size=32, seed=0)
    assert "still.png" in {p.name for p in ds.files}
    x, _ = ds[0]
    assert x.shape == (3, 1, 32, 32)


def test_loader_is_worker_independent(tmp_path):
    ds = make_dataset(["synthetic:mix"], frames=5, size=32, seed=0)
    batches0 = [b for b, _ in (next(iter(make_loader(ds, 2, workers=0, start=s))) for s in (0, 2))]
    it = iter(make_loader(ds, 2, workers=2))
    batches2 = [next(it)[0], next(it)[0]]
    for a, b in zip(batches0, batches2, strict=True):
        assert torch.equal(a, b)
    x, skipped = collate_clips([ds[0], (ds[1], ("f: bad",))])
    assert x.shape == (2, 3, 5, 32, 32) and skipped == ["f: bad"]


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        make_dataset([str(tmp_path / "missing")], 5, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files found"):
        make_dataset([str(tmp_path / "empty")], 5, 32)
    (tmp_path / "images").mkdir()
    write_video(tmp_path / "images" / "x.png", np.zeros((1, 16, 16, 3), np.uint8), 0)
    with pytest.raises(DataError, match="image\\(s\\) but no videos"):
        make_dataset([str(tmp_path / "images")], 5, 32)
    assert len(make_dataset([str(tmp_path / "images")], 1, 32)) == 1  # fine for the image stage
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"junk")
    with pytest.raises(DataError, match="no usable clip"):
        make_dataset([str(tmp_path / "bad")], 5, 32)[0]
    with pytest.raises(DataError, match="unknown synthetic kind"):
        make_dataset(["synthetic:cats"], 5, 32)
    with pytest.raises(DataError, match="cannot be combined"):
        make_dataset(["synthetic:mix", str(tmp_path)], 5, 32)
    with pytest.raises(DataError, match="1 \\+ 4k"):
        ClipDataset([tmp_path / "bad"], frames=4)


def test_multi_scale_crops_show_finer_detail(tmp_path):
    # 1-pixel stripes at 128x128: scaled whole to 16 they average to flat gray; a crop of the frame scaled to a
    # short side of up to 128 keeps the stripes. scale_max = size is the plain behaviour.
    stripes = np.zeros((1, 128, 128, 3), np.uint8)
    stripes[:, :, ::2] = 255
    write_video(tmp_path / "s.png", stripes, 0)
    plain = ClipDataset([tmp_path], frames=1, size=16, seed=0)
    multi = ClipDataset([tmp_path], frames=1, size=16, seed=0, scale_max=128)
    assert max(plain[i][0].std().item() for i in range(6)) < 0.1
    assert max(multi[i][0].std().item() for i in range(6)) > 0.3
    assert torch.equal(multi[3][0], ClipDataset([tmp_path], frames=1, size=16, seed=0, scale_max=128)[3][0])
    with pytest.raises(DataError, match="--scale-max"):
        make_dataset(["synthetic:mix"], 5, 32, scale_max=64)
