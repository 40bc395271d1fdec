"""Output claims where ``flock`` does not work, busy outputs of runs with other options, and the stale-temp sweep
once per folder (issue 28; audit findings X9, X10)."""

import errno
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import bright_bar_clip as clip
from conftest import cli

from pvvae_cli.codec.latents import read_meta
from pvvae_cli.media.writer import write_video
from pvvae_cli.runtime import atomic, output_lock
from pvvae_cli.runtime.output_lock import STALE_AFTER_S, UNNAMED_STALE_AFTER_S, Holder, OutputLock, lock_path

MODEL = "preset:tiny"

pytestmark = pytest.mark.skipif(output_lock.fcntl is None, reason="no fcntl: claims are not coordinated (Windows)")


@pytest.fixture
def no_flock(monkeypatch):
    """``flock`` as on Lustre mounted without ``-o flock``: ENOSYS for every call."""
    calls = []

    def flock(fd, op):
        calls.append(op)
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(output_lock.fcntl, "flock", flock)
    return calls


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_record(path, holder: Holder | None, age_s: float = 0.0) -> None:
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(holder.encode() if holder is not None else b"")
    t = time.time() - age_s
    os.utime(lock, (t, t))


# ------------------------------------------------------------------------------ the O_EXCL fallback (X9)
@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP])
def test_without_flock_one_claimant_at_a_time_and_release_frees_it(tmp_path, monkeypatch, code):
    def flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(output_lock.fcntl, "flock", flock)
    out = tmp_path / "sub" / "a.safetensors"
    first, second = OutputLock(out, "opts-1"), OutputLock(out, "opts-2")
    assert first.try_acquire() and first.mode == "file"
    assert not second.try_acquire()  # (a) busy: the holder is alive (this very process)
    assert (second.holder.pid, second.holder.options, second.holder.mode) == (os.getpid(), "opts-1", "file")
    first.release()
    assert not lock_path(out).exists()
    assert second.try_acquire()  # (b) released: the next claimant gets it
    assert Holder.parse(lock_path(out).read_bytes()).options == "opts-2"
    second.release()
    assert sorted(p.name for p in out.parent.iterdir()) == []


def test_stale_lock_files_are_broken_by_the_rule(tmp_path, no_flock):
    out = tmp_path / "a.safetensors"
    me = Holder.me("file", "x")
    # (c) a holder on this host whose pid is gone: broken at once
    write_record(out, Holder(me.host, me.machine, dead_pid(), "1", me.since, "file", "x"))
    lock = OutputLock(out, "mine")
    assert lock.try_acquire()
    assert Holder.parse(lock_path(out).read_bytes()).pid == os.getpid()
    lock.release()
    if me.started:  # Linux: a pid of this host now used by another process (started at another time)
        write_record(out, Holder(me.host, me.machine, os.getpid(), "12345", me.since, "file", "x"))
        lock = OutputLock(out)
        assert lock.try_acquire()
        lock.release()
    # a live holder on this host is never broken, however old
    write_record(out, me, age_s=10 * STALE_AFTER_S)
    assert not OutputLock(out).try_acquire()
    # a holder on another host: busy until the lock file is older than STALE_AFTER_S
    other = Holder("elsewhere", "b00t", 4242, "7", me.since, "file", "x")
    write_record(out, other, age_s=STALE_AFTER_S - 60)
    lock = OutputLock(out)
    assert not lock.try_acquire() and lock.holder == other
    write_record(out, other, age_s=STALE_AFTER_S + 60)
    assert lock.try_acquire()
    lock.release()
    # an empty lock file (what pvvae 0.10 left on such a mount): busy while young, broken when old
    write_record(out, None)
    lock = OutputLock(out)
    assert not lock.try_acquire() and lock.holder is None
    write_record(out, None, age_s=UNNAMED_STALE_AFTER_S + 60)
    assert lock.try_acquire()
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left: no lock file, no broken one


def test_a_claim_made_without_flock_is_respected_where_flock_works(tmp_path):
    out = tmp_path / "a.safetensors"
    holder = Holder("elsewhere", "b00t", 4242, "7", time.time(), "file", "x")
    write_record(out, holder)  # claimed from a node whose mount has no flock
    lock = OutputLock(out)
    assert not lock.try_acquire() and lock.holder == holder
    # a flock holder's leftover (killed by kill -9): the flock decides, and nobody holds it
    write_record(out, Holder("elsewhere", "b00t", 4242, "7", time.time(), "flock", "x"))
    assert lock.try_acquire() and lock.mode == "flock"
    lock.release()


def test_encode_works_when_flock_fails(tmp_path, no_flock):
    """(d) Lustre without -o flock: every output failed with 'cannot write' before the fallback."""
    for i in range(3):
        write_video(tmp_path / "clips" / f"v{i}.mp4", clip(5, seed=i), fps=8)
    lat = tmp_path / "lat"
    res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "-q")
    assert res.exit_code == 0, res.output
    assert "encoded 3, skipped 0, failed 0" in res.output
    assert no_flock  # flock was tried (and failed)
    assert sorted(p.name for p in lat.iterdir()) == [f"v{i}.safetensors" for i in range(3)]  # no lock file left
    # a claim held by another live run is left to it, as with flock
    with OutputLock(lat / "v1.safetensors") as lock:
        assert lock.try_acquire() and lock.mode == "file"
        res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "-q", "--overwrite")
    assert res.exit_code == 0 and "encoded 2, skipped 1, failed 0" in res.output
    assert "v1.mp4: busy: another pvvae run is writing it" in res.output


# --------------------------------------------------------------- busy with other options (issue 28)
def claim_key(**options) -> str:
    from pvvae_cli.cli.common import load_model
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.codec.runner import encode_claim_key

    codec = Codec(load_model(MODEL), MODEL, torch.device("cpu"), torch.float32)
    return encode_claim_key(codec, EncodeOptions(**options))


@pytest.mark.parametrize("flock_works", [True, False])
def test_an_output_busy_with_other_options_fails_and_with_the_same_is_skipped(tmp_path, request, flock_works):
    if not flock_works:
        request.getfixturevalue("no_flock")
    for i in range(3):
        write_video(tmp_path / "clips" / f"v{i}.mp4", clip(9, seed=i), fps=8)
    lat = tmp_path / "lat"
    with OutputLock(lat / "v0.safetensors", claim_key(num_frames=9)) as other:  # another run: --frames 9
        assert other.try_acquire()
        res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "--frames", "5", "-q")
    assert res.exit_code == 1
    failed = [line for line in res.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "another pvvae run with different options" in failed[0], res.output
    assert str(lat / "v0.safetensors") in failed[0] and f"pid {os.getpid()}" in failed[0]
    assert "encoded 2, skipped 0, failed 1" in res.output
    assert not (lat / "v0.safetensors").exists()
    # the same options: the other run's to write, skipped as busy (how identical runs share a folder)
    with OutputLock(lat / "v0.safetensors", claim_key(num_frames=5)) as same:
        assert same.try_acquire()
        res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "--frames", "5", "-q")
    assert res.exit_code == 0 and "encoded 0, skipped 3, failed 0" in res.output
    assert "v0.mp4: busy: another pvvae run is writing it" in res.output


def test_an_output_written_by_a_run_with_other_options_fails(tmp_path):
    """After the other run ended: its output is there, made otherwise, and needs --overwrite."""
    write_video(tmp_path / "clips" / "v0.mp4", clip(9), fps=8)
    lat = tmp_path / "lat"
    assert cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "--frames", "9", "-q").exit_code == 0
    res = cli("encode", tmp_path / "clips", "-o", lat, "--model", MODEL, "--frames", "5", "-q")
    assert res.exit_code == 1 and "encoded 0, skipped 0, failed 1" in res.output
    assert f"output {lat / 'v0.safetensors'} exists but was made from other encode options" in res.output
    assert read_meta(lat / "v0.safetensors").num_frames == 9


def test_a_decode_output_busy_with_other_options_fails(tmp_path):
    write_video(tmp_path / "c.mp4", clip(5), fps=8)
    lat, rec = tmp_path / "lat", tmp_path / "rec"
    assert cli("encode", tmp_path / "c.mp4", "-o", lat, "--model", MODEL, "-q").exit_code == 0
    with OutputLock(rec / "c.mp4", "another decode") as other:
        assert other.try_acquire()
        res = cli("decode", lat, "-o", rec, "-q")
    assert res.exit_code == 1 and "another pvvae run with different options" in res.output
    assert str(rec / "c.mp4") in res.output


# ---------------------------------------------------------------------- stale temps, once per folder (X10)
def test_stale_temps_are_swept_once_per_folder_per_run(tmp_path, monkeypatch):
    clips, lat = tmp_path / "clips", tmp_path / "lat"
    for name in ("a/x.png", "a/y.png", "a/z.png", "b/w.png"):
        write_video(clips / name, clip(1), fps=0)
    (lat / "a").mkdir(parents=True)
    (lat / "a" / ".x.safetensors.k9x2ab_c.tmp").write_bytes(b"a killed run's half latent")
    (lat / "a" / ".other.safetensors.k9x2ab_c.tmp").write_bytes(b"not one of this run's outputs")
    listed = []
    real = os.listdir

    def listdir(path="."):
        listed.append(os.path.relpath(path, lat))
        return real(path)

    monkeypatch.setattr(atomic.os, "listdir", listdir)
    res = cli("encode", clips, "-o", lat, "--model", MODEL, "-q")
    assert res.exit_code == 0 and "encoded 4, skipped 0, failed 0" in res.output
    assert sorted(p for p in listed if not p.startswith("..")) == ["a", "b"]  # not once per output
    assert sorted(p.name for p in (lat / "a").iterdir()) == [".other.safetensors.k9x2ab_c.tmp", "x.safetensors",
                                                             "y.safetensors", "z.safetensors"]


def test_stale_temps_removes_only_the_claimed_outputs_temp_files(tmp_path):
    for name in (".a.mp4.ab12cd_3.tmp", ".a.mp4.x.mp4.ab12cd_3.tmp", ".b.mp4.ab12cd_3.tmp", ".a.mp4.lock"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".a.mp4.zz12cd_3.tmp").mkdir()
    temps = atomic.StaleTemps()
    assert temps.remove(tmp_path / "a.mp4") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.mp4.lock", ".a.mp4.x.mp4.ab12cd_3.tmp",
                                                          ".b.mp4.ab12cd_3.tmp"]
    assert temps.remove(tmp_path / "a.mp4") == 0  # each listed name is removed at most once
    (tmp_path / ".b.mp4.zzzzzzzz.tmp").write_bytes(b"x")  # after the listing: left for the next run
    assert temps.remove(tmp_path / "b.mp4") == 1
    assert (tmp_path / ".b.mp4.zzzzzzzz.tmp").exists()
    assert temps.remove(tmp_path / "missing" / "c.mp4") == 0
