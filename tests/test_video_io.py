import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.media.ffmpeg_probe import parse_header
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


def test_odd_size_is_written_playable_and_said(tmp_path):
    # yuv444p H.264 (exact odd sizes) does not play in browsers or QuickTime: yuv420p with one replicated edge.
    from pvvae_cli.media.ffmpeg_probe import read_header

    frames = numbered(3, 35, 49)
    notes = write_video(tmp_path / "odd.mp4", frames, fps=8)
    assert read_header(tmp_path / "odd.mp4").pix_fmt == "yuv420p"
    info = probe(tmp_path / "odd.mp4")
    assert (info.num_frames, info.height, info.width) == (3, 36, 50)
    assert len(notes) == 1 and "odd size 35x49 written as 36x50" in notes[0]
    assert write_video(tmp_path / "even.mp4", frames[:, :34, :48], fps=8) == []
    write_video(tmp_path / "odd_frames", frames, fps=8)  # PNG keeps it exact
    assert read_clip(tmp_path / "odd_frames" / "000000.png")[0].shape == (1, 35, 49, 3)


def test_temp_names_never_match_the_output_suffix(tmp_path):
    from pvvae_cli.runtime.atomic import remove_stale_temps

    with VideoWriter(tmp_path / "a.mp4", fps=8) as w:
        w.write(numbered(2))
        tmp_names = [p.name for p in tmp_path.iterdir()]
        assert len(tmp_names) == 1 and tmp_names[0].startswith(".a.mp4.") and tmp_names[0].endswith(".tmp")
    # A killed writer's leftovers (file or folder) are removed; another output's temp files are not.
    (tmp_path / ".a.mp4.ab12cd_3.tmp").write_bytes(b"x")
    (tmp_path / ".a.mp4.zz12cd_3.tmp").mkdir()
    (tmp_path / ".a.mp4.x.mp4.ab12cd_3.tmp").write_bytes(b"x")
    assert remove_stale_temps(tmp_path / "a.mp4") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.mp4.x.mp4.ab12cd_3.tmp", "a.mp4"]


def test_tags_are_read_back(tmp_path):
    from pvvae_cli.media.writer import read_tag

    for name, frames in (("v.mp4", numbered(3)), ("i.png", numbered(1)), ("f", numbered(2))):
        with VideoWriter(tmp_path / name, fps=8, tag=f"pvvae-decode:{name}") as w:
            w.write(frames)
        assert read_tag(tmp_path / name) == f"pvvae-decode:{name}"
    write_video(tmp_path / "plain.mp4", numbered(2), fps=8)
    assert read_tag(tmp_path / "plain.mp4") is None and read_tag(tmp_path / "missing.png") is None


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
    cases = {"corrupt.mp4": "not a video", "empty.mp4": "empty file", "notes.txt": "unsupported file type",
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


def _ffmpeg(*args):
    import subprocess

    from pvvae_cli.media.ffmpeg_probe import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True, capture_output=True)


@pytest.mark.parametrize("width", [48, 24])
def test_widths_decord_pads_are_read_exactly(tmp_path, width):
    # decord returns 4 (or 6) "channels" for these widths and its get_batch fails; the clip must read exactly.
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 256, (9, 32, width, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.mp4", frames, fps=8, codec="libx264", macro_block_size=1)
    got, fps = read_clip(tmp_path / "c.mp4")
    assert got.shape == (9, 32, width, 3) and fps == 8.0
    ref = np.stack([f for f in iio.imiter(tmp_path / "c.mp4", plugin="FFMPEG")])
    assert np.array_equal(got, ref)
    assert np.array_equal(read_clip(tmp_path / "c.mp4", start=2, stride=3)[0], ref[2::3])


def test_ffmpeg_fallback_reader_matches_decord(tmp_path, monkeypatch):
    """The reader used where decord has no wheel (macOS arm64): forced here with PVVAE_VIDEO_READER=ffmpeg."""
    from pvvae_cli.media.video_io import READER_ENV

    write_video(tmp_path / "v.mp4", numbered(11), fps=10)
    want, _ = read_clip(tmp_path / "v.mp4", start=1, num_frames=6, stride=2)
    monkeypatch.setenv(READER_ENV, "ffmpeg")
    info = probe(tmp_path / "v.mp4")
    assert info.reader == "ffmpeg" and (info.num_frames, info.fps, info.height, info.width) == (11, 10.0, 48, 64)
    got, fps = read_clip(tmp_path / "v.mp4", start=1, num_frames=6, stride=2)
    assert fps == 5.0 and np.array_equal(got, want)
    monkeypatch.setenv(READER_ENV, "opencv")
    with pytest.raises(PvvaeError, match="choose decord or ffmpeg"):
        probe(tmp_path / "v.mp4")


def test_unreadable_videos_name_the_cause(tmp_path):
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", tmp_path / "audio.mp4")
    write_video(tmp_path / "v.mp4", numbered(8), fps=8)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="no video stream \\(audio only\\)") as e:
        probe(tmp_path / "audio.mp4")
    assert "st_nb" not in str(e.value)  # not decord's internal check
    with pytest.raises(VideoReadError, match="truncated"):
        probe(tmp_path / "cut.mp4")


def test_camera_files_with_colour_tags_and_audio_are_videos(tmp_path):
    """Most camera and phone files say "yuv420p(tv, bt709, progressive)" (commas inside the pixel format) and carry
    audio: 0.4.0 took them for audio-only files and refused them."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=8", "-f", "lavfi", "-i", "sine=frequency=440",
            "-frames:v", "9", "-t", "1.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-color_range", "tv",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-c:a", "aac",
            tmp_path / "phone.mp4")
    info = probe(tmp_path / "phone.mp4")
    assert (info.num_frames, info.height, info.width, info.notes) == (9, 48, 64, ())
    assert read_clip(tmp_path / "phone.mp4")[0].shape == (9, 48, 64, 3)
    # the header line of a Motion-JPEG .mov (pd-extendedview's diver.mov): 72:72 is a square pixel
    head = parse_header("Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'diver.mov':\n  Duration: 00:00:14.04\n"
                        "  Stream #0:0[0x1](eng): Video: mjpeg (Baseline) (mjpa / 0x61706A6D), yuvj422p(pc, "
                        "bt470bg/unknown/unknown, progressive), 640x480 [SAR 72:72 DAR 4:3], 3298 kb/s, 25 fps\n")
    assert (head.has_video, head.width, head.height, head.fps, head.sar) == (True, 640, 480, 25.0, None)


@pytest.mark.parametrize("suffix", [".mpg", ".mpeg", ".m4v"])
def test_mpeg_program_streams_are_read_and_found(tmp_path, suffix):
    """Debian's sample clips (kivy's cityCC0.mpg, ViSP's cube.mpeg) are MPEG program streams: 0.4.0 did not list
    the suffix, so folder discovery skipped them without a word. They are read, but never written."""
    from pvvae_cli.media.discovery import collect_videos
    from pvvae_cli.media.writer import output_kind

    codec = ["-c:v", "mpeg2video"] if suffix != ".m4v" else ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4"]
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "9", *codec, tmp_path / f"c{suffix}")
    info = probe(tmp_path / f"c{suffix}")
    assert (info.num_frames, info.height, info.width) == (9, 48, 64)
    assert [p.name for p in collect_videos([tmp_path])] == [f"c{suffix}"]
    with pytest.raises(ValueError, match="use a video suffix"):
        output_kind(tmp_path / f"out{suffix}")


def test_what_cannot_be_kept_is_noted(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha = np.full((20, 30), 255, np.uint8)
    iio.imwrite(tmp_path / "opaque.png", np.dstack([rgb, alpha]))
    alpha[:5] = 0
    iio.imwrite(tmp_path / "rgba.png", np.dstack([rgb, alpha]))
    assert probe(tmp_path / "opaque.png").notes == ()
    assert "alpha channel" in probe(tmp_path / "rgba.png").notes[0]
    write_video(tmp_path / "v.mp4", numbered(4), fps=8)
    _ffmpeg("-i", tmp_path / "v.mp4", "-c", "copy", "-bsf:v", "h264_metadata=sample_aspect_ratio=128/117",
            tmp_path / "sar.mp4")
    assert probe(tmp_path / "v.mp4").notes == ()
    assert "pixel aspect ratio 128:117" in probe(tmp_path / "sar.mp4").notes[0]


def _id_frames(n, h=48, w=64):
    """Frame i: a moving noise texture (so B-frames really predict) under a flat strip of grey 4*i that names it."""
    noise = np.random.default_rng(0).integers(0, 256, (h, w + n, 3), dtype=np.uint8)
    frames = np.stack([noise[:, i : i + w] for i in range(n)])
    frames[:, :16] = (np.arange(n) * 4).reshape(n, 1, 1, 1)
    return frames


def _ids(frames):
    return [int(round(f[2:14, 8:-8].astype(float).mean() / 4)) for f in frames]


def _encode(frames, path, *args):
    import subprocess

    from pvvae_cli.media.ffmpeg_probe import ffmpeg_exe

    n, h, w, _ = frames.shape
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-r", "25", "-i", "-", *map(str, args), str(path)], input=frames.tobytes(), check=True,
                   capture_output=True)


@pytest.mark.parametrize("reader", ["auto", "ffmpeg"])
def test_windows_anywhere_in_a_b_frame_program_stream_are_the_files_frames(tmp_path, monkeypatch, reader):
    """decord 0.6 seeks to the wrong pictures in MPEG program streams with B-frames (Debian's cityCC0.mpg; imageio's
    cockatoo.mp4, H.264 with open GOPs, likewise) and returned other frames or garbage without an error: 0.6.0
    trained and validated on such windows. ``probe`` checks decord against ffmpeg and reads such files with ffmpeg."""
    from pvvae_cli.media.video_io import READER_ENV

    if reader == "ffmpeg":
        monkeypatch.setenv(READER_ENV, "ffmpeg")
    _encode(_id_frames(60), tmp_path / "c.mpg", "-c:v", "mpeg2video", "-q:v", "2", "-bf", "2", "-g", "12", "-f", "vob")
    info = probe(tmp_path / "c.mpg")
    assert info.num_frames == 60 and (reader == "ffmpeg" or info.reader == "ffmpeg")
    for start in (40, 5, 23, 0, 50):
        assert _ids(read_clip(tmp_path / "c.mpg", start=start, num_frames=9)[0]) == list(range(start, start + 9))


def test_variable_frame_rate_files_give_each_frame_once(tmp_path, monkeypatch):
    """ffmpeg's default output timing repeats frames to a constant rate (Debian's tree.avi: 68 frames read as 449):
    the ffmpeg reader must give the file's frames, each once, as decord does."""
    from pvvae_cli.media.video_io import READER_ENV

    # 12 frames whose display times have gaps of 1, 2 and 5 frame durations
    _encode(_id_frames(12), tmp_path / "vfr.mkv", "-vf", "setpts='(N+2*gte(N,4)+5*gte(N,8))/(25*TB)'",
            "-fps_mode", "passthrough", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p")
    for choice in ("ffmpeg", "decord"):
        monkeypatch.setenv(READER_ENV, choice)
        info = probe(tmp_path / "vfr.mkv")
        assert info.num_frames == 12, choice
        assert _ids(read_clip(tmp_path / "vfr.mkv")[0]) == list(range(12)), choice
        assert _ids(read_clip(tmp_path / "vfr.mkv", start=7, num_frames=4)[0]) == [7, 8, 9, 10], choice


def test_probe_results_follow_the_file(tmp_path):
    """probe caches per file for the process (the decord check decodes frames); a file replaced at the same path is
    probed again."""
    path = tmp_path / "v.mp4"
    write_video(path, numbered(9), fps=8)
    assert probe(path).num_frames == 9
    write_video(path, numbered(13), fps=8)  # atomic replace: a new file at the same path
    assert probe(path).num_frames == 13
    (tmp_path / "link.mp4").symlink_to(path)  # the same file under another name: one cache entry, its own path
    assert probe(tmp_path / "link.mp4").path == tmp_path / "link.mp4" and probe(path).path == path
