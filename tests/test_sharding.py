"""``pvvae encode --shard I/N``: N processes encode one dataset without coordination (issue 11)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pvvae_cli.cli.app import app
from pvvae_cli.media.discovery import Job
from pvvae_cli.media.sharding import Shard, ShardError, parse_shard
from pvvae_cli.media.writer import write_video

runner = CliRunner()


def test_shards_are_disjoint_cover_everything_and_are_stable():
    from pathlib import Path

    jobs = [Job(Path(f"in/{i}.mp4"), Path(f"d{i % 7}/{i}.mp4"), Path(f"out/{i}.safetensors")) for i in range(16000)]
    parts = [Shard(i, 8).select(jobs) for i in range(8)]
    assert sorted(j.rel for p in parts for j in p) == sorted(j.rel for j in jobs)  # a partition
    assert max(map(len, parts)) < 1.15 * min(map(len, parts))  # balanced: ~2000 each, binomial spread
    # An input's shard depends on its own path only: not on the listing order or on other files.
    sub = jobs[-300:][::-1]
    assert Shard(3, 8).select(sub) == [j for j in sub if j in parts[3]]


@pytest.mark.parametrize("env, want", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Shard(3, 4, 1)),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "10"}, Shard(2, 5)),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}, Shard(0, 2, 0)),
])
def test_auto_reads_the_launchers_environment(env, want):
    assert parse_shard("auto", env) == want


@pytest.mark.parametrize("text", ["2/2", "-1/3", "1", "a/b", "0/0"])
def test_invalid_shards_are_usage_errors(text):
    with pytest.raises(ShardError, match="--shard I/N"):
        parse_shard(text, {})
    with pytest.raises(ShardError, match="no RANK/WORLD_SIZE"):
        parse_shard("auto", {})


def test_cli_shards_split_a_folder_and_write_one_manifest_each(tmp_path, monkeypatch):
    clips = tmp_path / "clips"
    for i in range(6):
        write_video(clips / f"sub{i % 2}" / f"v{i}.mp4", np.full((5, 32, 32, 3), 20 * i, np.uint8), fps=8)
    lat, man = tmp_path / "lat", tmp_path / "m.jsonl"
    written = []
    for i in range(3):
        before = set(lat.rglob("*.safetensors")) if lat.exists() else set()
        res = runner.invoke(app, ["encode", str(clips), "-o", str(lat), "--model", "preset:tiny", "--shard", f"{i}/3",
                                  "--manifest", str(man)])
        assert res.exit_code == 0, res.output
        assert f"shard {i}/3: " in res.output
        written.append(set(lat.rglob("*.safetensors")) - before)
    assert sum(map(len, written)) == 6 and len(set().union(*written)) == 6  # disjoint, complete
    shard_manifests = sorted(tmp_path.glob("m.shard-*-of-00003.jsonl"))
    assert [p.name for p in shard_manifests] == [f"m.shard-0000{i}-of-00003.jsonl" for i in range(3)]
    merged = [json.loads(line) for p in shard_manifests for line in p.read_text().splitlines()]  # the merge: cat
    assert sorted(r["input"] for r in merged) == sorted(str(p) for p in clips.rglob("*.mp4"))
    # torchrun's environment gives the same split as the explicit form.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    res = runner.invoke(app, ["encode", str(clips), "-o", str(tmp_path / "lat2"), "--model", "preset:tiny",
                              "--shard", "auto", "-q"])
    assert res.exit_code == 0, res.output
    assert {p.relative_to(tmp_path / "lat2") for p in (tmp_path / "lat2").rglob("*.safetensors")} == \
        {p.relative_to(lat) for p in written[1]}
    res = runner.invoke(app, ["encode", str(clips), "-o", str(tmp_path / "lat3"), "--model", "preset:nope",
                              "--shard", "3/3"])
    assert res.exit_code == 2 and "out of range" in res.output and not (tmp_path / "lat3").exists()
