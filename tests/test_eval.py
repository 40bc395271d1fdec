"""`pvvae eval` and the evaluation library: protocol checks, numbers that match the metrics computed directly,
the side-by-side table for two models, JSON/CSV contents, unavailable metrics, the speed protocol, and the
two-set FVD/KVD comparison. Library and wiring tests use a tiny stand-in feature network (its numbers mean
nothing); one CLI test runs the real ST-LPIPS and I3D (skipped, with the reason, where they are not set up)."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import StandInI3D, metric_network, moving_square, run_pvvae
from typer.testing import CliRunner

from pvvae_cli import VideoVAE
from pvvae_cli.cli.app import app
from pvvae_cli.eval.protocol import EvalProtocol, load_clip, window_starts
from pvvae_cli.eval.reconstruction import Unavailable, evaluate
from pvvae_cli.media.transforms import resize_crop
from pvvae_cli.media.writer import write_video
from pvvae_cli.metrics import LPIPSMetric, psnr, ssim

runner = CliRunner()


@pytest.fixture
def clips(tmp_path):
    d = tmp_path / "clips"
    for i in range(3):
        write_video(d / f"c{i}.mp4", moving_square(9, seed=i), fps=8.0)
    return d


@pytest.fixture
def two_models(tmp_path):
    paths = []
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        VideoVAE.from_preset("tiny").save_pretrained(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


# ------------------------------------------------------------------------------------------------ library
def test_protocol_checks(tiny):
    # Frame counts follow each model's temporal factor: checked per model, not by the protocol alone.
    with pytest.raises(ValueError, match="nearest valid: 13 or 17"):
        EvalProtocol(frames=16).check_model(tiny)
    with pytest.raises(ValueError, match="multiple of 16"):
        EvalProtocol(size=40)
    with pytest.raises(ValueError, match="context frames must be 1 \\+ 4a"):
        EvalProtocol(frames=17, predict_context=4).check_model(tiny)
    EvalProtocol(frames=17, predict_context=5).check_model(tiny)
    with pytest.raises(ValueError, match="no learned padding tokens"):
        EvalProtocol(frames=9, predict_context=5, padding="learnable").check_model(
            VideoVAE.from_preset("tiny", padding_mode="gaussian"))
    t8 = VideoVAE.from_preset("tiny", temporal_compression=8)
    EvalProtocol(frames=17, predict_context=9).check_model(t8)
    with pytest.raises(ValueError, match=r"1 \+ 8k .*got 13; nearest valid: 9 or 17"):
        EvalProtocol(frames=13).check_model(t8)
    with pytest.raises(ValueError, match="future frames must be a positive multiple of 8"):
        EvalProtocol(frames=9, predict_context=9).check_model(t8)


def test_resize_center_crop():
    x = torch.zeros(3, 2, 40, 80)
    x[:, :, :, 20:60] = 1.0  # the centre half is bright
    y = resize_crop(x, 16)  # 40x80 -> 16x32 -> centre 16x16
    assert y.shape == (3, 2, 16, 16)
    assert y[:, :, :, 2:14].min() > 0.99  # the crop is the bright centre


def test_load_clip_skips_short_videos(clips, tmp_path):
    assert load_clip(clips / "c0.mp4", 9, 32).shape == (3, 9, 32, 32)
    with pytest.raises(ValueError, match="has 9 frames, the protocol needs 13"):
        load_clip(clips / "c0.mp4", 13, 32)


def test_windows_spread_over_the_clip(clips, tmp_path):
    assert window_starts(100, 17, 4) == [0, 28, 55, 83]  # the last window ends at the clip's last frame
    assert window_starts(100, 17, 1, start=5) == [5] and window_starts(100, 17, 3, start=10) == [10, 46, 83]
    assert window_starts(18, 17, 4) == [0, 1] and window_starts(16, 17, 2) == []
    write_video(clips / "short.mp4", moving_square(5, seed=9), fps=8.0)
    protocol = EvalProtocol(frames=5, size=32, windows=3)
    got = list(protocol.clips(sorted(clips.iterdir())))
    names = [n for n, c in got if c is not None]
    assert names[:3] == [f"{clips / 'c0.mp4'}@{s}" for s in (0, 2, 4)] and len(names) == 10  # 3 x 3 + 1
    x = load_clip(clips / "c0.mp4", 5, 32, start=2)
    assert torch.equal(dict(got)[f"{clips / 'c0.mp4'}@2"], x)
    assert list(EvalProtocol(frames=13, size=32, windows=2).clips([clips / "short.mp4"]))[0][1] is None  # skipped
    with pytest.raises(ValueError, match="windows must be >= 1"):
        EvalProtocol(windows=0)


def test_evaluate_matches_direct_metrics(clips):
    vaes = [VideoVAE.from_preset("tiny").eval() for _ in range(2)]
    models = [("m0", "preset:tiny", vaes[0]), ("m1", "preset:tiny", vaes[1])]
    videos = sorted(clips.iterdir())
    lpips = LPIPSMetric("alex", random_backbone=True)  # wiring only: never a reported number
    report = evaluate(models, videos, EvalProtocol(frames=9, size=32, predict_context=5, batch_size=2),
                      lpips=lpips, features=StandInI3D())
    assert report.videos == [str(v) for v in videos]
    m0 = report.models[0]
    x = load_clip(videos[1], 9, 32).unsqueeze(0)
    with torch.no_grad():
        recon = vaes[0].decode(vaes[0].encode(x).mode()).clamp(-1, 1)
    row = m0.per_video[1]
    assert row["video"] == str(videos[1])
    assert row["psnr"] == pytest.approx(float(psnr(recon, x)), abs=1e-4)
    assert row["ssim"] == pytest.approx(float(ssim(recon, x)), abs=1e-5)
    assert m0.metrics["psnr"] == pytest.approx(np.mean([r["psnr"] for r in m0.per_video]))
    assert set(m0.metrics) >= {"psnr", "ssim", "lpips", "rfvd", "pred_psnr", "pred_ssim", "copy_psnr", "copy_ssim"}
    assert m0.metrics["rfvd"] >= 0 and m0.metrics["lpips"] > 0
    # Two different random models give different numbers; the copy baseline is the same for both.
    m1 = report.models[1]
    assert m0.metrics["psnr"] != m1.metrics["psnr"]
    assert m0.metrics["copy_psnr"] == m1.metrics["copy_psnr"]


def test_evaluate_reports_unavailable_metrics(clips):
    models = [("m", "preset:tiny", VideoVAE.from_preset("tiny").eval())]
    report = evaluate(models, sorted(clips.iterdir())[:1], EvalProtocol(frames=9, size=32),
                      lpips=Unavailable("no LPIPS here"), features=StandInI3D())
    m = report.models[0]
    assert "lpips" not in m.metrics and m.unavailable["lpips"] == "no LPIPS here"
    assert "rfvd" not in m.metrics and "at least 2 videos" in m.unavailable["rfvd"]
    table = report.to_markdown()
    assert "| LPIPS ↓ | unavailable [1] |" in table and "[1] no LPIPS here" in table


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_eval_two_models_table_json_csv(clips, two_models, tmp_path, offline):
    out_json, out_csv = tmp_path / "eval.json", tmp_path / "per_video.csv"
    res = runner.invoke(app, ["eval", str(clips), "-m", str(two_models[0]), "-m", str(two_models[1]),
                              "--frames", "9", "--size", "32", "--predict-context", "5",
                              "--json", str(out_json), "--per-video", str(out_csv)])
    assert res.exit_code == 0, res.output
    # The markdown table: models side by side, ST-LPIPS and rFVD unavailable with reasons and the fix; LPIPS
    # (torchvision's backbone) is opt-in and absent.
    a, b = str(two_models[0]), str(two_models[1])
    assert f"| metric | {a} | {b} |" in res.output
    for label in ("PSNR (dB) ↑", "SSIM ↑", "prediction PSNR (dB) ↑", "copy-last-frame PSNR (dB)"):
        assert f"| {label} |" in res.output
    assert "| ST-LPIPS (alex) ↓ | unavailable [1] | unavailable [1] |" in res.output
    assert "| rFVD (3 clips) ↓ | unavailable [2] | unavailable [2] |" in res.output
    assert "LPIPS ↓" not in res.output.replace("ST-LPIPS (alex) ↓", "")
    assert res.output.count("run `pvvae setup-metrics`") == 2
    data = json.loads(out_json.read_text())
    p = data["protocol"]
    assert (p["frames"], p["size"], p["predict_context"], p["posterior"]) == (9, 32, 5, "mode")
    assert data["num_videos"] == 3 and len(data["videos"]) == 3
    assert {"psnr", "ssim", "prediction"} <= set(p["metric_implementations"])
    assert [m["name"] for m in data["models"]] == [a, b]
    for m in data["models"]:
        assert m["tag"] == "t4s16c8" and m["parameters"] > 0
        assert {"psnr", "ssim", "pred_psnr", "pred_ssim", "copy_psnr", "copy_ssim"} <= set(m["metrics"])
        assert "stlpips" not in m["metrics"] and "setup-metrics" in m["unavailable"]["stlpips"]
        assert "rfvd" not in m["metrics"] and "setup-metrics" in m["unavailable"]["rfvd"]
        assert "lpips" not in m["metrics"] and "lpips" not in m["unavailable"]
        assert len(m["per_video"]) == 3
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 6 and {r["model"] for r in rows} == {a, b}
    assert float(rows[0]["psnr"]) == pytest.approx(data["models"][0]["per_video"][0]["psnr"], rel=1e-5)
    assert rows[0]["stlpips"] == "" and rows[0]["lpips"] == ""


def test_cli_eval_real_networks_and_speed(clips, two_models, tmp_path):
    # The real ST-LPIPS (alex) and I3D, given by path; two models side by side on two clips (the I3D costs
    # seconds per clip on a CPU: 2 clips x (original + 2 models) passes).
    stlpips, i3d = metric_network("stlpips"), metric_network("i3d")
    out_json = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", str(clips), "-m", str(two_models[0]), "-m", str(two_models[1]),
                              "--max-videos", "2", "--frames", "9", "--size", "32",
                              "--stlpips-weights", str(stlpips), "--i3d", str(i3d),
                              "--speed", "--speed-frames", "5", "--speed-batch", "1", "--speed-warmup", "1",
                              "--speed-steps", "2", "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    assert "| ST-LPIPS (alex) ↓ |" in res.output and "| rFVD (2 clips) ↓ |" in res.output
    assert "unavailable" not in res.output and "| LPIPS" not in res.output
    assert "speed (it/s, 5×32², batch 1) ↑" in res.output
    assert "metric networks, seconds per clip: ST-LPIPS (alex) " in res.output and " I3D " in res.output
    data = json.loads(out_json.read_text())
    m0, m1 = data["models"]
    for m in (m0, m1):
        assert m["metrics"]["rfvd"] > 0 and m["metrics"]["stlpips"] > 0 and m["metrics"]["it_s"] > 0
        assert m["metrics"]["stlpips"] == pytest.approx(np.mean([r["stlpips"] for r in m["per_video"]]))
    assert m0["metrics"]["stlpips"] != m1["metrics"]["stlpips"]  # two different random models
    impl = data["protocol"]["metric_implementations"]
    assert "not comparable with LPIPS" in impl["stlpips"] and "I3D" in impl["rfvd"] and "2 clips" in impl["rfvd"]
    assert set(data["protocol"]["network_seconds_per_clip"]) == {"stlpips", "i3d"}
    assert (m["speed"]["warmup"], m["speed"]["steps"], m["speed"]["batch"]) == (1, 2, 1)
    assert "RSS" in m["speed"]["memory_measure"]


def test_cli_eval_reference_vs_generated(clips, tmp_path, monkeypatch):
    import pvvae_cli.metrics

    # Wiring only: the stand-in replaces the I3D (the real one is tested in test_metric_networks.py).
    monkeypatch.setattr(pvvae_cli.metrics, "load_i3d", lambda path=None, device="cpu": StandInI3D())
    other = tmp_path / "other"
    for i in range(3):
        write_video(other / f"g{i}.mp4", np.full((9, 32, 32, 3), 200 - 40 * i, np.uint8), fps=8.0)
    args = ["eval", "--reference", str(clips), "--frames", "9", "--size", "32"]
    same = runner.invoke(app, [*args, "--generated", str(clips), "--json", str(tmp_path / "same.json")])
    assert same.exit_code == 0, same.output
    data = json.loads((tmp_path / "same.json").read_text())
    assert data["fvd"] < 1e-6 and (data["num_reference"], data["num_generated"]) == (3, 3)
    assert "| FVD (3 vs 3 clips) ↓ |" in same.output and "| KVD (3 vs 3 clips) ↓ |" in same.output
    diff = runner.invoke(app, [*args, "--generated", str(other), "--json", str(tmp_path / "diff.json")])
    assert diff.exit_code == 0, diff.output
    assert json.loads((tmp_path / "diff.json").read_text())["fvd"] > 1e-3


def test_cli_eval_errors(clips, two_models, tmp_path, offline, monkeypatch):
    from pvvae_cli.models import default

    monkeypatch.delenv(default.ENV_VAR, raising=False)  # no default model either: eval needs --model
    monkeypatch.setattr(default, "shipped_weights_dir", lambda: tmp_path / "no-shipped-weights")
    m = str(two_models[0])
    res = runner.invoke(app, ["eval", str(clips), "-m", m, "--frames", "16"])
    assert res.exit_code == 2 and "--frames must be 1 + 4k" in res.output and "13 or 17" in res.output
    res = runner.invoke(app, ["eval", str(clips), "-m", m, "--frames", "9", "--predict-context", "4"])
    assert res.exit_code == 2 and "--predict-context must be 1 + 4a" in res.output
    res = runner.invoke(app, ["eval", str(clips)])
    assert res.exit_code == 2 and "--model" in res.output
    res = runner.invoke(app, ["eval", "--reference", str(clips)])
    assert res.exit_code == 2 and "--generated" in res.output
    res = runner.invoke(app, ["eval", "--reference", str(clips), "--generated", str(clips)])
    assert res.exit_code == 2 and "run `pvvae setup-metrics`" in res.output
    res = runner.invoke(app, ["eval", str(clips), "-m", m, "--frames", "13", "--size", "32"])
    assert res.exit_code == 2 and "no clip could be evaluated" in res.output and "has 9 frames" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "missing"), "-m", m])
    assert res.exit_code == 2 and "no such file or folder" in res.output
    assert "Traceback" not in res.output


def test_console_eval(clips, tmp_path):
    res = run_pvvae("eval", clips / "c0.mp4", "-m", "preset:tiny", "--frames", "5", "--size", "32", "--no-lpips",
                    "--no-fvd")
    assert res.returncode == 0, res.stderr
    assert "| metric | preset:tiny |" in res.stdout and "RANDOM weights" in res.stderr


def test_speed_peak_memory_does_not_depend_on_what_ran_before(tiny):
    """CPU peak RSS is per process and only grows: each model is measured in a fresh process, so its figure does not
    include an earlier model's (or anything else's) peak. Also: the protocol says how long it will take."""
    import numpy as np

    from pvvae_cli.eval.speed import SpeedProtocol, measure_speed, measure_speed_isolated

    protocol = SpeedProtocol(frames=5, batch=1, size=32, warmup=1, steps=2)
    said = []
    first = measure_speed_isolated(tiny, protocol, progress=said.append)
    assert first["it_s"] > 0 and "separate process" in first["memory_measure"]
    assert any("first step" in m and "1 warm-up + 2 timed steps" in m for m in said)
    hog = np.ones(int((first["peak_memory_gib"] + 0.5) * 2**30) // 8)  # this process now peaks 0.5 GiB higher
    again = measure_speed_isolated(tiny, protocol)
    in_process = measure_speed(tiny, protocol)
    del hog
    assert in_process["peak_memory_gib"] > first["peak_memory_gib"] + 0.4  # what eval reported before
    assert abs(again["peak_memory_gib"] - first["peak_memory_gib"]) < 0.1
