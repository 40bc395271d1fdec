"""Nothing overwritten, nothing stale, nothing claimed that was not done: encode/decode outputs (issue 11)."""

import os

import numpy as np
import torch
from conftest import bright_bar_clip as clip
from conftest import cli

from pvvae_cli.codec.latents import load_latent, read_meta, save_latent
from pvvae_cli.media.video_io import probe
from pvvae_cli.media.writer import write_video
from pvvae_cli.runtime.output_lock import OutputLock

MODEL = "preset:tiny"


def test_decode_into_the_source_folder_never_replaces_sources(tmp_path):
    d = tmp_path / "d"
    for i in range(3):
        write_video(d / f"v{i}.mp4", clip(5, seed=i), fps=8)
    before = {p.name: p.read_bytes() for p in d.glob("*.mp4")}
    assert cli("encode", d, "-o", d, "--model", MODEL, "-q").exit_code == 0
    res = cli("decode", d, "-o", d, "--overwrite", "-q")
    assert res.exit_code == 1
    assert res.output.count("is the source video") == 3 and "never overwritten" in res.output
    assert {p.name: p.read_bytes() for p in d.glob("*.mp4")} == before
    # A touched source no longer matches the latent's record, but is still not pvvae decode's: never replaced.
    os.utime(d / "v0.mp4", ns=(1, 1))
    res = cli("decode", d / "v0.safetensors", "-o", d, "--overwrite", "-q")
    assert res.exit_code == 1 and "pvvae decode did not write" in res.output
    assert (d / "v0.mp4").read_bytes() == before["v0.mp4"]


def test_encode_never_replaces_a_file_that_is_not_a_latent(tmp_path):
    write_video(tmp_path / "model.mp4", clip(5), fps=8)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"weights, not a latent")
    res = cli("encode", tmp_path / "model.mp4", "-o", tmp_path / "out", "--model", MODEL, "--overwrite", "-q")
    assert res.exit_code == 1 and "is not a pvvae latent file" in res.output and "never replaced" in res.output
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"weights, not a latent"


def test_decode_replaces_a_stale_output_only_with_overwrite(tmp_path):
    write_video(tmp_path / "c.mp4", clip(9), fps=8)
    lat, rec = tmp_path / "lat", tmp_path / "rec"
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "--frames", "5", "-q").exit_code == 0
    assert cli("decode", lat, "-o", rec, "-q").exit_code == 0
    assert probe(rec / "c.mp4").num_frames == 5
    res = cli("decode", lat, "-o", rec, "-q")
    assert res.exit_code == 0 and "decoded 0, skipped 1, failed 0" in res.output  # up to date
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "--overwrite", "-q").exit_code == 0
    res = cli("decode", lat, "-o", rec, "-q")
    assert res.exit_code == 1 and "decoded from another latent file or with other options" in res.output
    assert "--overwrite" in res.output
    res = cli("decode", lat, "-o", rec, "-q", "--crf", "20", "--overwrite")
    assert res.exit_code == 0 and "decoded 1, skipped 0, failed 0" in res.output
    assert probe(rec / "c.mp4").num_frames == 9
    res = cli("decode", lat, "-o", rec, "-q")  # other options (crf) than the output was made with
    assert res.exit_code == 1 and "other options" in res.output


def test_output_claimed_by_another_run_is_left_alone(tmp_path):
    for i in range(2):
        write_video(tmp_path / "clips" / f"v{i}.mp4", clip(5, seed=i), fps=8)
    lat = tmp_path / "lat"
    with OutputLock(lat / "v0.safetensors") as lock:
        assert lock.try_acquire()
        assert not OutputLock(lat / "v0.safetensors").try_acquire()
        res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "-q")
    assert res.exit_code == 0 and "encoded 1, skipped 1, failed 0" in res.output
    assert "v0.mp4: busy: another pvvae run is writing it" in res.output
    assert not (lat / "v0.safetensors").exists() and (lat / "v1.safetensors").exists()
    assert sorted(p.name for p in lat.iterdir()) == ["v1.safetensors"]  # lock files are removed
    res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "-q")
    assert "encoded 1, skipped 1, failed 0" in res.output  # released: the next run does it


def test_an_output_replaced_by_another_run_is_not_reported_as_written(tmp_path, tiny):
    """Run B rewrites run A's output after A wrote it (between A's write and A's end): A must not claim it."""
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.codec.runner import run_encode
    from pvvae_cli.media.discovery import expand_inputs, plan_jobs

    for i in range(3):
        write_video(tmp_path / "clips" / f"v{i}.mp4", clip(5, seed=i), fps=8)
    codec = Codec(tiny, MODEL, torch.device("cpu"), torch.float32)
    files, _ = expand_inputs([str(tmp_path / "clips")], frozenset({".mp4"}))
    jobs, _ = plan_jobs(files, tmp_path / "lat", lambda _: ".safetensors")

    def other_run(outcome):
        if outcome.job.output.name == "v0.safetensors":
            z, meta = load_latent(outcome.job.output)
            save_latent(outcome.job.output, z + 1, meta.replace(options_hash="other", write_id="run-b"))

    outcomes = run_encode(codec, jobs, EncodeOptions(), quiet=True, on_outcome=other_run)
    assert [o.status for o in outcomes] == ["failed", "encoded", "encoded"]
    assert "replaced by another pvvae run" in outcomes[0].reason
    ids = {read_meta(tmp_path / "lat" / f"v{i}.safetensors").write_id for i in (1, 2)}
    assert len(ids) == 1 and "run-b" not in ids


def test_temp_files_do_not_look_like_outputs_and_stale_ones_are_removed(tmp_path):
    write_video(tmp_path / "c.mp4", clip(5), fps=8)
    lat, rec = tmp_path / "lat", tmp_path / "rec"
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "-q").exit_code == 0
    rec.mkdir()
    # What kill -9 leaves behind: a temp file of the mp4, a half-written PNG-frame folder, a latent's temp file.
    (rec / ".c.mp4.k9x2ab_c.tmp").write_bytes(b"half an mp4")
    (rec / ".c.abcdefgh.tmp").mkdir()
    (rec / ".c.abcdefgh.tmp" / "000000.png").write_bytes(b"png")
    (lat / ".c.safetensors.abcdefgh.tmp").write_bytes(b"half a latent")
    assert cli("decode", lat, "-o", rec, "-q").exit_code == 0
    assert cli("decode", lat, "-o", rec, "-q", "--format", "png").exit_code == 0
    assert sorted(p.name for p in rec.iterdir()) == ["c", "c.mp4"]
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "-q", "--overwrite").exit_code == 0
    assert sorted(p.name for p in lat.iterdir()) == ["c.safetensors"]


def test_two_concurrent_runs_with_different_options_never_claim_each_others_files(tmp_path):
    """Two processes encode one folder into one output folder at once, with different --frames and --overwrite.
    Whatever the interleaving: the run that ends last must hold every output it lists as encoded (the other ended
    first, so it can no longer write), and each output holds the encoding of a run that lists it as encoded."""
    import json
    import shutil
    import subprocess
    import time

    clips = tmp_path / "clips"
    for i in range(6):
        write_video(clips / f"v{i}.mp4", clip(9, seed=i), fps=8)
    lat = tmp_path / "lat"
    exe = shutil.which("pvvae")
    procs = {frames: subprocess.Popen([exe, "encode", str(clips), "-o", str(lat), "--model", MODEL, "--overwrite",
                                       "--frames", str(frames), "--manifest", str(tmp_path / f"m{frames}.jsonl"),
                                       "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for frames in (5, 9)}
    ended, deadline = [], time.time() + 300
    while len(ended) < 2 and time.time() < deadline:
        ended += [f for f, p in procs.items() if f not in ended and p.poll() is not None]
        time.sleep(0.01)
    errors = {f: p.communicate(timeout=10)[1] for f, p in procs.items()}
    listed = {}
    for frames in procs:
        assert procs[frames].returncode in (0, 1), errors[frames]
        assert all("replaced by another pvvae run" in line or "another pvvae run with different options" in line
                   for line in errors[frames].splitlines() if line.startswith("failed:")), errors[frames]
        records = map(json.loads, (tmp_path / f"m{frames}.jsonl").read_text().splitlines())
        listed[frames] = {r["output"] for r in records if r["status"] == "encoded"}
    for out in map(str, lat.glob("*.safetensors")):
        assert out in listed[read_meta(out).num_frames], out  # its writer says it wrote it
    last = ended[-1]
    assert all(read_meta(out).num_frames == last for out in listed[last]), errors[last]


def test_kill_during_decode_leaves_no_mp4_lookalike_and_the_next_run_cleans_up(tmp_path):
    import shutil
    import signal
    import subprocess
    import time

    write_video(tmp_path / "c.mp4", np.repeat(clip(1), 97, axis=0), fps=8)
    lat, rec = tmp_path / "lat", tmp_path / "rec"
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "-q").exit_code == 0
    proc = subprocess.Popen([shutil.which("pvvae"), "decode", str(lat), "-o", str(rec), "-q", "--tile", "on",
                             "--tile-size", "32", "--tile-overlap", "16"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not [p for p in rec.glob(".c.mp4.*") if p.name != ".c.mp4.lock"]:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # mid-write: no chance to clean up
    proc.wait()
    left = sorted(p.name for p in rec.iterdir() if p.name != ".c.mp4.lock")  # a dead run's lock holds nothing
    if "c.mp4" not in left:  # the kill landed before the rename (nearly always)
        assert len(left) == 1 and left[0].startswith(".c.mp4.") and left[0].endswith(".tmp"), left
    assert [p.name for p in rec.rglob("*.mp4")] in ([], ["c.mp4"])  # find -name '*.mp4' sees no temp file
    assert cli("decode", lat, "-o", rec, "-q").exit_code == 0
    assert sorted(p.name for p in rec.iterdir()) == ["c.mp4"]


def test_decode_of_an_odd_size_warns_and_writes_a_playable_mp4(tmp_path):
    from pvvae_cli.media.ffmpeg_probe import read_header

    write_video(tmp_path / "c.mp4", clip(5), fps=8)
    lat, rec = tmp_path / "lat", tmp_path / "rec"
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "--size", "33x45", "-q").exit_code == 0
    res = cli("decode", lat, "-o", rec, "--encoded-size", "-q")  # the 33x45 the model saw
    assert res.exit_code == 0 and "warning:" in res.output and "odd size 33x45 written as 34x46" in res.output
    assert read_header(rec / "c.mp4").pix_fmt == "yuv420p"
    res = cli("decode", lat, "-o", tmp_path / "png", "--encoded-size", "--format", "png", "-q")
    assert res.exit_code == 0 and "odd size" not in res.output
    assert probe(tmp_path / "png" / "c" / "000000.png").height == 33
