import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from pvvae_cli.media.video_io import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    VideoReadError,
    clip_indices,
    frames_to_tensor,
    iter_clip,
    probe,
    read_clip,
    tensor_to_frames,
)
from pvvae_cli.media.writer import VideoWriter, write_video


def numbered(t, h=48, w=64):
    """Frame i is a flat grey of value 8 * i (+ a gradient): survives H.264 well enough to identify each frame."""
    base = (np.arange(t) * 8).reshape(t, 1, 1, 1)
    grad = (np.arange(w) // 8).reshape(1, 1, w, 1)
    return np.broadcast_to(base + grad, (t, h, w, 3)).astype(np.uint8).copy()


def frame_ids(frames):
    return [int(round((f[:, :8].astype(float).mean()) / 8)) for f in frames]


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "clip30.mp4"
    write_video(path, numbered(30), fps=30.0)
    return path


def test_exts():
    assert ".mp4" in VIDEO_EXTS and ".webm" in VIDEO_EXTS and ".png" in IMAGE_EXTS and ".jpeg" in IMAGE_EXTS
    assert all(e == e.lower() and e.startswith(".") for e in VIDEO_EXTS | IMAGE_EXTS)


def test_mp4_roundtrip_and_probe(clip30):
    info = probe(clip30)
    assert (info.num_frames, info.fps, info.height, info.width, info.is_image) == (30, 30.0, 48, 64, False)
    frames, fps = read_clip(clip30)
    assert frames.shape == (30, 48, 64, 3) and frames.dtype == np.uint8 and fps == 30.0
    assert np.abs(frames.astype(int) - numbered(30)).mean() < 2.0
    assert frame_ids(frames) == list(range(30))


def test_exact_frame_selection(clip30):
    frames, fps = read_clip(clip30, start=3, num_frames=5, stride=4)
    assert frame_ids(frames) == [3, 7, 11, 15, 19] and fps == pytest.approx(7.5)
    frames, fps = read_clip(clip30, fps=10.0)
    assert frame_ids(frames) == list(range(0, 30, 3)) and fps == 10.0
    frames, _ = read_clip(clip30, start=25, num_frames=100)  # fewer left than asked: all of them, no error
    assert frame_ids(frames) == [25, 26, 27, 28, 29]
    chunks = list(iter_clip(clip30, start=1, chunk_size=8))
    assert [c.shape[0] for c in chunks] == [8, 8, 8, 5]
    assert frame_ids(np.concatenate(chunks)) == list(range(1, 30))


def test_selection_errors(clip30):
    info = probe(clip30)
    with pytest.raises(VideoReadError, match="past the end"):
        clip_indices(info, start=30)
    with pytest.raises(ValueError, match="exceeds the source"):
        clip_indices(info, fps=60.0)
    with pytest.raises(ValueError, match="not both"):
        clip_indices(info, stride=2, fps=10.0)


def test_odd_size_is_not_resized(tmp_path):
    frames = numbered(3, 35, 49)
    write_video(tmp_path / "odd.mp4", frames, fps=8)
    info = probe(tmp_path / "odd.mp4")
    assert (info.num_frames, info.height, info.width) == (3, 35, 49)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_images_are_one_frame_clips(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    img = {"RGB": rgb, "RGBA": np.dstack([rgb, np.full((20, 30), 7, np.uint8)]), "L": rgb[:, :, 0]}[mode]
    iio.imwrite(tmp_path / "a.png", img)
    frames, fps = read_clip(tmp_path / "a.png")
    assert frames.shape == (1, 20, 30, 3) and fps == 0.0
    want = np.repeat(rgb[:, :, :1], 3, axis=2) if mode == "L" else rgb
    assert np.array_equal(frames[0], want)
    assert probe(tmp_path / "a.png").is_image


def test_bad_inputs_name_file_and_reason(tmp_path):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00not a video" * 100)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "dir.mp4").mkdir()
    cases = {"corrupt.mp4": "cannot decode", "empty.mp4": "empty file", "notes.txt": "unsupported file type",
             "missing.mp4": "no such file", "dir.mp4": "not a regular file"}
    for name, reason in cases.items():
        with pytest.raises(VideoReadError, match=reason) as e:
            read_clip(tmp_path / name)
        assert name in str(e.value)


def test_png_outputs(tmp_path):
    frames = numbered(4)
    write_video(tmp_path / "frames", frames, fps=8)
    names = sorted(os.listdir(tmp_path / "frames"))
    assert names == ["000000.png", "000001.png", "000002.png", "000003.png"]
    assert np.array_equal(iio.imread(tmp_path / "frames" / "000002.png"), frames[2])  # PNG is lossless
    write_video(tmp_path / "frames", frames[:2], fps=8)  # replaced as a whole
    assert sorted(os.listdir(tmp_path / "frames")) == names[:2]
    write_video(tmp_path / "one.png", frames[:1], fps=0)
    assert np.array_equal(read_clip(tmp_path / "one.png")[0], frames[:1])
    with pytest.raises(ValueError, match="folder path"):
        write_video(tmp_path / "two.png", frames[:2], fps=0)
    assert not (tmp_path / "two.png").exists()


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "x.mp4", fps=8) as w:
            w.write(numbered(4))
            raise KeyboardInterrupt
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "f", fps=8) as w:
            w.write(numbered(2))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_tensor_conversion():
    frames = np.random.default_rng(1).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (3, 3, 5, 7) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.is_contiguous()
    assert np.array_equal(tensor_to_frames(x), frames)
    assert np.array_equal(tensor_to_frames(x.bfloat16()), tensor_to_frames(x.bfloat16().float()))
    y = tensor_to_frames(torch.full((3, 1, 2, 2), 5.0))  # clamped, not wrapped
    assert (y == 255).all()
