"""The example scripts run as a user runs them (random tiny weights stand in for the shipped model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import moving_square

from pvvae_cli.media.writer import write_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PVVAE = Path(sys.executable).parent / "pvvae"


def run(script: str, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                          env=os.environ | {"PVVAE": str(PVVAE), "MODEL": "preset:tiny", "THREADS": "1"} | env)


@pytest.mark.skipif(not PVVAE.is_file(), reason="the pvvae console script is not installed beside this python")
def test_preprocess_shards_manifest_failures_and_resume(tmp_path):
    src = tmp_path / "videos"
    for i in range(3):
        write_video(src / ("sub" if i else "") / f"c{i}.mp4", moving_square(9, seed=i), fps=8.0)
    (src / "broken.mp4").write_bytes(b"not a video" * 20)
    out = tmp_path / "latents"
    res = run("preprocess.sh", src, out, 2)
    assert res.returncode == 1, res.stderr + res.stdout
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == ["c0.mp4", "c1.mp4", "c2.mp4"]
    assert all(Path(r["output"]).is_file() for r in records)
    assert (out / "failures.txt").read_text().startswith(f"{src / 'broken.mp4'}: ")
    assert not list(out.glob("manifest.shard-*"))
    (src / "broken.mp4").unlink()
    res = run("preprocess.sh", src, out, 2)  # resumes: the three latents are up to date, nothing fails
    assert res.returncode == 0 and "3 latent file(s)" in res.stdout, res.stderr + res.stdout
    assert run("preprocess.sh", src).returncode == 2  # usage


@pytest.mark.skipif(not PVVAE.is_file(), reason="the pvvae console script is not installed beside this python")
def test_predict_script_writes_truth_beside_prediction(tmp_path):
    write_video(tmp_path / "c.mp4", moving_square(17, seed=0), fps=8.0)
    res = run("predict.sh", tmp_path / "c.mp4", tmp_path / "p.mp4", SIZE="32")
    assert res.returncode == 0, res.stderr
    assert "copy last frame" in res.stdout and (tmp_path / "p.mp4").is_file()
