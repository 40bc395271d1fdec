"""``pvvae encode`` / ``pvvae decode`` end to end, through the installed console command where it matters."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import requires_cpu_bf16, run_pvvae
from typer.testing import CliRunner

from pvvae_cli import VideoVAE
from pvvae_cli.cli.app import app
from pvvae_cli.codec.latents import load_latent
from pvvae_cli.media.video_io import probe, read_clip
from pvvae_cli.media.writer import write_video

MODEL = "preset:tiny"
runner = CliRunner()


def pvvae(*args, check_rc=None):
    out = run_pvvae(*args)
    if check_rc is not None:
        assert out.returncode == check_rc, out.stderr
    return out


def moving(t, h=70, w=100, seed=0):
    """uint8 (t, h, w, 3): a bright square moving right over a noisy background."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 80, (1, h, w, 3), dtype=np.uint8), t, axis=0)
    for i in range(t):
        frames[i, 10:30, 5 + 3 * i : 25 + 3 * i] = 230
    return frames


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Odd inputs (1, 2, 16, 18 frames of 100x70, an image in a subfolder) encoded once by the installed command."""
    root = tmp_path_factory.mktemp("cli")
    clips = root / "clips"
    for t in (1, 2, 16, 18):
        write_video(clips / f"c{t}.mp4", moving(t, seed=t), fps=12)
    write_video(clips / "stills" / "img.png", moving(1), fps=0)
    out = pvvae("encode", clips, "-o", root / "lat", "--model", MODEL, "--manifest", root / "m.jsonl", check_rc=0)
    return root, out


def test_roundtrip_restores_frames_and_size(encoded):
    root, out = encoded
    assert "encoded 5, skipped 0, failed 0" in out.stderr
    lat = root / "lat"
    names = sorted(p.relative_to(lat).as_posix() for p in lat.rglob("*.safetensors"))
    assert names == ["c1.safetensors", "c16.safetensors", "c18.safetensors", "c2.safetensors",
                     "stills/img.safetensors"]  # mirrors the input tree
    z, meta = load_latent(lat / "c18.safetensors")
    assert z.shape == (8, 6, 5, 7) and (meta.num_frames, meta.frame_pad, meta.height, meta.width) == (18, 3, 70, 100)
    manifest = [json.loads(line) for line in (root / "m.jsonl").read_text().splitlines()]
    assert len(manifest) == 5 and {m["frames"] for m in manifest} == {1, 2, 16, 18}
    assert all(m["latent_shape"][0] == 8 and m["fps"] in (12.0, 0.0) for m in manifest)

    out = pvvae("decode", lat, "-o", root / "rec", check_rc=0)  # the model is taken from the latents
    assert "decoded 5, skipped 0, failed 0" in out.stderr
    for t in (1, 2, 16, 18):
        info = probe(root / "rec" / f"c{t}.mp4")
        assert (info.num_frames, info.height, info.width, info.fps) == (t, 70, 100, 12.0)
    img, _ = read_clip(root / "rec" / "stills" / "img.png")
    assert img.shape == (1, 70, 100, 3)


def test_resume_skips_and_option_change_needs_overwrite(encoded):
    root, _ = encoded
    lat = root / "lat"
    before = {p: p.stat().st_mtime_ns for p in lat.rglob("*.safetensors")}
    res = runner.invoke(app, ["encode", str(root / "clips"), "-o", str(lat), "--model", MODEL, "-q"])
    assert res.exit_code == 0 and "encoded 0, skipped 5, failed 0" in res.output
    assert before == {p: p.stat().st_mtime_ns for p in lat.rglob("*.safetensors")}  # nothing rewritten
    clip = root / "clips" / "c2.mp4"
    res = runner.invoke(app, ["encode", str(clip), "-o", str(lat), "--model", MODEL, "--frames", "1", "-q"])
    assert res.exit_code == 1 and "other encode options; pass --overwrite" in res.output
    res = runner.invoke(app, ["encode", str(clip), "-o", str(lat), "--model", MODEL, "--frames", "1", "-q",
                              "--overwrite"])
    assert res.exit_code == 0 and load_latent(lat / "c2.safetensors")[1].num_frames == 1


@requires_cpu_bf16
def test_a_changed_dtype_alone_is_named_with_its_fix(encoded):
    """The audit's P6: --dtype auto is fp32 on the CPU and bf16 on CUDA, so a CPU-started batch resumed on a GPU
    differed only in the dtype; it said "other encode options" for every file. bf16 on the CPU plays the GPU here."""
    root, _ = encoded
    clip = root / "clips" / "c16.mp4"
    res = runner.invoke(app, ["encode", str(clip), "-o", str(root / "lat"), "--model", MODEL, "--dtype", "bf16", "-q"])
    assert res.exit_code == 1 and "written with dtype fp32, this run computes in bf16" in res.output
    assert "pass --dtype fp32 to continue" in res.output


def test_corrupt_and_empty_files_are_reported_and_the_batch_goes_on(tmp_path):
    clips = tmp_path / "clips"
    write_video(clips / "good.mp4", moving(5), fps=8)
    (clips / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 200)
    (clips / "empty.mov").write_bytes(b"")
    res = runner.invoke(app, ["encode", str(clips), "str-missing", "-o", str(tmp_path / "lat"), "--model", MODEL,
                              "-q", "--batch-size", "4"])
    assert res.exit_code == 1
    assert "corrupt.mp4: truncated or unfinished file" in res.output and "empty.mov: empty file" in res.output
    assert "str-missing: no such file or folder" in res.output and "encoded 1, skipped 0, failed 3" in res.output
    assert sorted(os.listdir(tmp_path / "lat")) == ["good.safetensors"]
    assert "Traceback" not in res.output


def test_unwritable_output_and_missing_model(tmp_path):
    write_video(tmp_path / "a.mp4", moving(1), fps=8)
    (tmp_path / "taken").write_text("a file, not a folder")
    out = pvvae("encode", tmp_path / "a.mp4", "-o", tmp_path / "taken" / "lat", "--model", MODEL)
    assert out.returncode == 2 and "taken is not a folder; choose another --output" in out.stderr
    assert "Traceback" not in out.stderr
    res = runner.invoke(app, ["encode", str(tmp_path / "a.mp4"), "-o", str(tmp_path / "lat"), "--model", MODEL,
                              "--size", "big"])
    assert res.exit_code == 2 and "invalid size 'big'" in res.output


def test_decode_refuses_other_model_unless_forced(encoded, tmp_path):
    root, _ = encoded
    latent = root / "lat" / "c1.safetensors"
    other = tmp_path / "other-tiny"
    VideoVAE.from_preset("tiny", base_channels=4).save_pretrained(other)
    res = runner.invoke(app, ["decode", str(latent), "-o", str(tmp_path / "rec"), "--model", str(other), "-q"])
    assert res.exit_code == 1 and "config hash" in res.output and "--force" in res.output
    assert not (tmp_path / "rec" / "c1.mp4").exists()
    res = runner.invoke(app, ["decode", str(latent), "-o", str(tmp_path / "rec"), "--model", str(other), "-q",
                              "--force", "--format", "png"])
    assert res.exit_code == 0 and sorted(os.listdir(tmp_path / "rec" / "c1")) == [".pvvae-tag", "000000.png"]
    res = runner.invoke(app, ["decode", str(latent), "-o", str(tmp_path / "rec2"), "--model", "preset:small",
                              "--force"])
    assert res.exit_code == 1 and "8 channels, model preset:small expects 32" in res.output


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path):
    clips = tmp_path / "clips"
    n = 8  # clips of ~0.2 s each: the kill lands well before the last one is done
    for i in range(n):
        write_video(clips / f"v{i}.mp4", moving(33, 128, 192, seed=i), fps=8)
    lat = tmp_path / "lat"
    proc = subprocess.Popen([shutil.which("pvvae"), "encode", str(clips), "-o", str(lat), "--model", MODEL, "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (lat.exists() and any(lat.glob("*.safetensors"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in lat.glob("*.safetensors")}
    assert 0 < len(done) < n, f"the kill should land mid-run, but {len(done)} of {n} outputs were done"
    for p in lat.glob("*.safetensors"):
        load_latent(p)  # every visible latent file is complete
    assert all(p.name.startswith(".") or p.suffix == ".safetensors" for p in lat.iterdir())
    res = runner.invoke(app, ["encode", str(clips), "-o", str(lat), "--model", MODEL, "-q"])
    assert res.exit_code == 0, res.output
    assert f"encoded {n - len(done)}, skipped {len(done)}, failed 0" in res.output  # the finished ones are skipped
    assert {name: (lat / name).stat().st_mtime_ns for name in done} == done  # ... and not rewritten
    assert len(list(lat.glob("*.safetensors"))) == n
    fresh = tmp_path / "fresh"
    last = f"v{n - 1}"  # encoded by the resumed run, after the kill
    res = runner.invoke(app, ["encode", str(clips / f"{last}.mp4"), "-o", str(fresh), "--model", MODEL, "-q"])
    assert torch.equal(load_latent(lat / f"{last}.safetensors")[0], load_latent(fresh / f"{last}.safetensors")[0])


def test_mid_clip_read_error_in_a_batch(tmp_path, monkeypatch, tiny):
    """A clip that fails half-way through reading fails alone; its batch mates are re-read and encoded."""
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.codec.runner import run_encode
    from pvvae_cli.media.discovery import expand_inputs, plan_jobs

    for i in range(3):
        write_video(tmp_path / "clips" / f"v{i}.mp4", moving(9, 32, 32, seed=i), fps=8)
    codec = Codec(tiny, MODEL, torch.device("cpu"), torch.float32)
    real = Codec.read_pixels

    def flaky(self, source, options, read_chunk=4):
        for i, x in enumerate(real(self, source, options, read_chunk=4)):
            if source.path.name == "v1.mp4" and i == 1:
                raise OSError("disk went away")
            yield x

    monkeypatch.setattr(Codec, "read_pixels", flaky)
    files, _ = expand_inputs([str(tmp_path / "clips")], frozenset({".mp4"}))
    jobs, _ = plan_jobs(files, tmp_path / "lat", lambda _: ".safetensors")
    outcomes = run_encode(codec, jobs, EncodeOptions(), batch_size=3, quiet=True)
    assert [o.status for o in outcomes] == ["encoded", "failed", "encoded"]
    assert outcomes[1].reason == "disk went away"
    monkeypatch.setattr(Codec, "read_pixels", real)
    z2 = load_latent(tmp_path / "lat" / "v2.safetensors")[0]
    ref = codec.encode_file(tmp_path / "clips" / "v2.mp4", EncodeOptions()).latent
    assert (z2 - ref).abs().max() <= 1e-5


def test_encode_clip_decord_pads(tmp_path):
    """A 9-frame 32x48 H.264 clip: decord returns 4 channels for it, encode must still read it exactly."""
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.mp4", frames, fps=8, codec="libx264")
    res = runner.invoke(app, ["encode", str(tmp_path / "c.mp4"), "-o", str(tmp_path / "lat"), "--model", MODEL, "-q"])
    assert res.exit_code == 0, res.output
    z, meta = load_latent(tmp_path / "lat" / "c.safetensors")
    assert (meta.num_frames, meta.height, meta.width) == (9, 32, 48) and z.shape == (8, 3, 2, 3)


def test_encode_warns_what_it_cannot_keep(tmp_path):
    import imageio.v3 as iio

    rgba = np.random.default_rng(0).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgba)
    res = runner.invoke(app, ["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "lat"), "--model", MODEL, "-q"])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "alpha channel" in res.output


def test_installs_and_runs_without_decord(tmp_path, monkeypatch):
    """decord has no wheel for macOS (Apple silicon) or Linux aarch64: it is a platform-conditional dependency, and
    without it encode and decode read videos with imageio-ffmpeg's ffmpeg (forced here by hiding decord)."""
    import sys
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    from pvvae_cli.media.video_io import video_reader

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    req = next(Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("decord"))
    where = {(p, m): req.marker.evaluate({"sys_platform": p, "platform_machine": m})
             for p, m in [("darwin", "arm64"), ("darwin", "x86_64"), ("linux", "aarch64"), ("linux", "x86_64"),
                          ("win32", "AMD64")]}
    assert where == {("darwin", "arm64"): False, ("darwin", "x86_64"): False, ("linux", "aarch64"): False,
                     ("linux", "x86_64"): True, ("win32", "AMD64"): True}

    write_video(tmp_path / "c.mp4", moving(9, 32, 48), fps=8)
    res = runner.invoke(app, ["encode", str(tmp_path / "c.mp4"), "-o", str(tmp_path / "a"), "--model", MODEL, "-q"])
    assert res.exit_code == 0, res.output
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord now raises ImportError
    assert video_reader() == "ffmpeg"
    res = runner.invoke(app, ["encode", str(tmp_path / "c.mp4"), "-o", str(tmp_path / "b"), "--model", MODEL, "-q"])
    assert res.exit_code == 0, res.output
    za, zb = (load_latent(tmp_path / d / "c.safetensors")[0] for d in "ab")
    assert torch.equal(za, zb)  # the same frames, whichever reader
    res = runner.invoke(app, ["decode", str(tmp_path / "b"), "-o", str(tmp_path / "rec"), "-q"])
    assert res.exit_code == 0 and probe(tmp_path / "rec" / "c.mp4").num_frames == 9
