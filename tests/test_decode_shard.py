"""``pvvae decode --shard`` (audit X11): N processes share one latent folder, each decoding its own shard, split as
``encode --shard`` splits its inputs, before any latent is read."""

import re

import pytest
from conftest import moving_square
from typer.testing import CliRunner

from pvvae_cli.cli.app import app
from pvvae_cli.media.sharding import Shard
from pvvae_cli.media.writer import write_video

MODEL = "preset:tiny"
runner = CliRunner()
CLIPS = ["a.mp4", "b.mp4", "sub/c.mp4", "sub/d.png", "e.png", "f.png"]


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    for i, name in enumerate(CLIPS):
        video = name.endswith(".mp4")
        write_video(root / "clips" / name, moving_square(5 if video else 1, seed=i), fps=8.0 if video else 0)
    res = runner.invoke(app, ["encode", str(root / "clips"), "-o", str(root / "lat"), "--model", MODEL, "-q",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return root


def _summary(output: str) -> tuple[int, int, int]:
    done, skipped, failed = re.search(r"decoded (\d+), skipped (\d+), failed (\d+)", output).groups()
    return int(done), int(skipped), int(failed)


def _outputs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_shards_decode_every_latent_exactly_once(latents, tmp_path):
    out = tmp_path / "videos"
    counts = []
    for i in range(2):
        res = runner.invoke(app, ["decode", str(latents / "lat"), "-o", str(out), "--shard", f"{i}/2", "-q",
                                  "--device", "cpu"])
        assert res.exit_code == 0, res.output
        counts.append(_summary(res.output))
    # Each latent once: nothing the other shard already wrote is met again (it would be skipped as up to date).
    assert [c[1:] for c in counts] == [(0, 0), (0, 0)] and sum(c[0] for c in counts) == len(CLIPS)
    assert all(c[0] > 0 for c in counts)  # both shards had work (a check on the file names chosen)
    assert _outputs(out) == sorted(["a.mp4", "b.mp4", "sub/c.mp4", "sub/d.png", "e.png", "f.png"])
    whole = runner.invoke(app, ["decode", str(latents / "lat"), "-o", str(out), "-q", "--device", "cpu"])
    assert _summary(whole.output) == (0, len(CLIPS), 0)  # the shards together did what one run does


def test_shard_split_is_encode_s(latents, tmp_path):
    """A shard holds the latents whose path (relative to the folder given) hashes into it, as ``Shard.select``."""
    out = tmp_path / "videos"
    res = runner.invoke(app, ["decode", str(latents / "lat"), "-o", str(out), "--shard", "1/3", "-q",
                              "--model", MODEL, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    want = sorted(name.rsplit(".", 1)[0] for name in CLIPS
                  if Shard(1, 3).holds(name.rsplit(".", 1)[0] + ".safetensors"))
    assert [p.rsplit(".", 1)[0] for p in _outputs(out)] == want


def test_an_empty_shard_exits_0_without_work(latents, tmp_path):
    empty = next(i for i in range(64) if not any(Shard(i, 64).holds(n.rsplit(".", 1)[0] + ".safetensors")
                                                 for n in CLIPS))
    res = runner.invoke(app, ["decode", str(latents / "lat"), "-o", str(tmp_path / "v"), "--shard", f"{empty}/64",
                              "--model", "no/such-model"])  # never loaded
    assert res.exit_code == 0, res.output
    assert f"shard {empty}/64: 0 of {len(CLIPS)} latents" in res.output and _summary(res.output) == (0, 0, 0)
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("shard, message", [("2/2", "shard index 2 of 2 is out of range"),
                                            ("x", "invalid --shard 'x'"),
                                            ("auto", "--shard auto: no RANK/WORLD_SIZE")])
def test_bad_shard_is_a_usage_error(latents, tmp_path, monkeypatch, shard, message):
    for key in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_PROCID",
                "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    res = runner.invoke(app, ["decode", str(latents / "lat"), "-o", str(tmp_path / "v"), "--shard", shard])
    assert res.exit_code == 2 and message in res.output, res.output


def test_shard_auto_reads_torchrun_env(latents, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    res = runner.invoke(app, ["decode", str(latents / "lat"), "-o", str(tmp_path / "v"), "--shard", "auto",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    n = sum(Shard(0, 2).holds(name.rsplit(".", 1)[0] + ".safetensors") for name in CLIPS)
    assert f"shard 0/2: {n} of {len(CLIPS)} latents" in res.output
