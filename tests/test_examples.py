"""The example scripts run as a user runs them (random tiny weights stand in for the shipped model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
from conftest import metric_network, moving_square

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


@pytest.mark.skipif(not PVVAE.is_file(), reason="the pvvae console script is not installed beside this python")
def test_train_default_runs_every_stage_then_skips_them(tmp_path):
    data = tmp_path / "data"
    for role, seeds in (("train", (0, 1)), ("heldout", (2,))):
        for s in seeds:
            write_video(data / role / f"c{s}.mp4", moving_square(9, size=64, seed=s), fps=8.0)
    (data / "photos").mkdir()
    iio.imwrite(data / "photos" / "p.png", moving_square(1, size=64, seed=3)[0])
    root = tmp_path / "run"
    env = dict(DATA=str(data), PRESET="tiny", SIZE="32", FRAMES="5", BATCH="1", IMAGE_STEPS="2", VIDEO_STEPS="2",
               DECODER_STEPS="2", HR_SIZE="48", HR_STEPS="2", SCALE_MAX="64", VAL_EVERY="100", PRECISION="fp32",
               GAN_WEIGHT="0", OMP_NUM_THREADS="1")
    res = run("train_default.sh", root, **env)
    assert res.returncode == 0, res.stderr[-2000:]
    stages = ("1-image", "2-video", "3-decoder", "4-decoder-hr")
    assert all((root / s / "weights" / "model.safetensors").is_file() for s in stages)
    hr = json.loads((root / "4-decoder-hr" / "train_config.json").read_text())
    assert (hr["stage"], hr["size"], hr["scale_max"], hr["init"]) == ("decoder", 48, 64, str(root / "3-decoder"))
    assert f"weights in {root}/4-decoder-hr/weights" in res.stdout
    again = run("train_default.sh", root, **env)  # a finished recipe: every stage is skipped, nothing retrains
    assert again.returncode == 0 and again.stdout.count("is finished") == 4, again.stderr[-2000:]
    log = (root / "recipe.log").read_text().splitlines()  # one dated line per invocation, every setting spelled out
    assert len(log) == 4 and log[0].startswith("# 20") and log[1] == log[3]
    assert log[1].startswith("OMP_NUM_THREADS=1 DATA=") and "HR_SIZE=48 " in log[1] and "PERC_WEIGHT=0.02 " in log[1]
    assert log[1].endswith(f"bash examples/train_default.sh {root}")


@pytest.mark.skipif(not PVVAE.is_file(), reason="the pvvae console script is not installed beside this python")
def test_train_default_with_a_frozen_pca_shortcut(tmp_path):
    """``SHORTCUT_PCA=N FREEZE_SHORTCUT=1``: no image stage (the fit covers later frames), the video stage fits the
    shortcut, and every stage keeps it frozen; ``PERC_STEPS`` adds the ST-LPIPS decoder stage, which alone trains
    the perceptual term and is the one shipped."""
    metric_network("stlpips")
    data = tmp_path / "data"
    for role, seeds in (("train", (0, 1)), ("heldout", (2,))):
        for s in seeds:
            write_video(data / role / f"c{s}.mp4", moving_square(9, size=64, seed=s), fps=8.0)
    root = tmp_path / "run"
    res = run("train_default.sh", root, DATA=str(data), PRESET="tiny", SIZE="32", FRAMES="5", BATCH="1",
              VIDEO_STEPS="2", DECODER_STEPS="2", VAL_EVERY="100", PRECISION="fp32", GAN_WEIGHT="0",
              SHORTCUT_PCA="4", FREEZE_SHORTCUT="1", PERC_STEPS="2", PERC_WEIGHT="0.05", OMP_NUM_THREADS="1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (root / "1-image").exists()
    stages = ("2-video", "3-decoder", "5-decoder-perceptual")
    configs = [json.loads((root / s / "train_config.json").read_text()) for s in stages]
    assert [(c["shortcut_pca"], c["freeze_shortcut"]) for c in configs] == [(4, True), (0, True), (0, True)]
    assert [(c["perceptual"], c["perceptual_weight"] if c["perceptual"] != "none" else 0) for c in configs] \
        == [("none", 0), ("none", 0), ("stlpips", 0.05)]
    assert configs[2]["init"] == str(root / "3-decoder")
    assert f"weights in {root}/5-decoder-perceptual/weights" in res.stdout
