import os

import pytest
import torch

from pvvae_cli.runtime.device import CPU_BF16_ENV, DEVICE_ENV, cpu_bf16_supported

# The suite runs on the CPU, also on a GPU host: `--device auto` means cpu here, in this process and in the CLI
# subprocesses that inherit the environment. Tests marked `cuda` choose their device themselves.
os.environ[DEVICE_ENV] = "cpu"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` where there is no GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA is not available here)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _gpu_for_cuda_tests(request, monkeypatch):
    if request.node.get_closest_marker("cuda") is not None:
        monkeypatch.delenv(DEVICE_ENV, raising=False)  # `--device auto` is the GPU again


# ---- bf16 on the CPU: oneDNN's bf16 convolution needs AVX512BW/VL/DQ or AVX-NE-CONVERT (not on AMD Zen 3)

NO_CPU_BF16 = f"bf16 convolutions need AVX512BW/VL/DQ or AVX-NE-CONVERT, which this CPU lacks (or {CPU_BF16_ENV}=0)"
requires_cpu_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason=NO_CPU_BF16)


@pytest.fixture
def no_cpu_bf16(monkeypatch):
    """Play a CPU without bf16 (e.g. AMD Zen 3): ``PVVAE_CPU_BF16=0``, the cached answer forgotten before and after
    (this teardown runs before monkeypatch restores the environment)."""
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    cpu_bf16_supported.cache_clear()
    yield
    cpu_bf16_supported.cache_clear()


def scramble(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights on every tap (PyTorch's default init), so invariance tests exercise every path; see
    ``pytorch_default_init_``."""
    from pvvae_cli.train.learning import pytorch_default_init_

    return pytorch_default_init_(model)


@pytest.fixture
def tiny():
    from pvvae_cli import VideoVAE

    return scramble(VideoVAE.from_preset("tiny")).eval()


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-waits, which make a shared 2-core machine many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- shared by the training tests (test_train*.py, test_data.py, test_losses.py, test_predictive.py)

# A run that takes seconds on one CPU thread: the tiny preset, 5-frame 32x32 synthetic clips, a small discriminator.
# fp32: "auto" would pick bf16 on some CPUs, and the tests' numbers must not depend on the machine.
TINY_TRAIN = dict(preset="tiny", data=["synthetic:shapes"], frames=5, size=32, batch_size=1, steps=4, lr=1e-3,
                  precision="fp32", workers=0, log_every=1, val_every=100, val_clips=1, ckpt_every=100, disc_channels=8,
                  disc_layers=2)


def tiny_train_config(stage: str = "video", **changes):
    """``build_config(stage, ...)`` of ``TINY_TRAIN`` with ``changes``."""
    from pvvae_cli.train.config import build_config

    return build_config(stage, **{**TINY_TRAIN, **changes})


def read_metrics(run_dir, kind: str | None = "train") -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` of one ``kind`` (``None``: every record)."""
    import json

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if kind is None or r["kind"] == kind]


def random_clip(*shape: int) -> torch.Tensor:
    """Uniform pixels in [-1, 1], e.g. ``random_clip(2, 3, 9, 32, 32)`` for ``(B, 3, T, H, W)``."""
    return torch.rand(*shape) * 2 - 1


# ---- shared by the media, codec, eval and predict tests (test_discovery.py, test_encode_decode_cli.py, test_eval.py,
# test_metrics.py, test_predict.py)


def moving_square(num_frames: int = 13, size: int = 32, step: int = 2, seed: int = 0):
    """uint8 ``(T, size, size, 3)``: a bright 8x8 square moving right by ``step`` px per frame over a flat
    background (predictable motion: copying the last frame is a beatable baseline)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    frames[:] = rng.integers(20, 80, 3)
    colour = rng.integers(150, 255, 3)
    for t in range(num_frames):
        x = min(2 + step * t, size - 8)
        frames[t, 12:20, x : x + 8] = colour
    return frames


def bright_bar_clip(t: int, seed: int = 0):
    """uint8 ``(t, 32, 32, 3)``: a bright 8x8 square moving right by 2 px per frame over a dark flat background (the
    output-safety and lock tests' clips)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 80, (1, 32, 32, 3), dtype=np.uint8), t, axis=0)
    for i in range(t):
        frames[i, 8:16, 2 + 2 * i : 10 + 2 * i] = 230
    return frames


def cli(*args):
    """``pvvae ARGS`` in this process (typer's CliRunner: monkeypatches apply), arguments as ``str``."""
    from typer.testing import CliRunner

    from pvvae_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def run_pvvae(*args, timeout: float = 300):
    """Run the installed console command ``pvvae`` with ``args``; returns the ``CompletedProcess`` (text output)."""
    import shutil
    import subprocess

    exe = shutil.which("pvvae")
    assert exe, "the console command `pvvae` is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout)


class StandInI3D(torch.nn.Module):
    """A tiny video network with the ``FeatureExtractor`` signature, for wiring tests only: its numbers mean
    nothing. ``videos uint8 (B, 3, T, H, W)`` -> features ``(B, features)``."""

    name = "stand-in"

    def __init__(self, features: int = 6) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 127.5 - 1).mean(dim=(2, 3, 4))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, an empty torch hub cache and an empty metrics cache: LPIPS, ST-LPIPS and I3D weights cannot be
    had."""
    import urllib.error

    from pvvae_cli.metrics.network_files import CACHE_ENV, SOURCES

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "no_metrics"))
    for source in SOURCES.values():
        monkeypatch.delenv(source.env, raising=False)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def metric_network(key: str):
    """The converted weight file of metric network ``key`` (``stlpips`` or ``i3d``), or skip the test with the
    reason: the real networks are set up by ``pvvae setup-metrics`` (CI runs it before the tests)."""
    from pvvae_cli.metrics.network_files import SOURCES, resolve_network_file
    from pvvae_cli.metrics.perceptual import MetricUnavailable

    try:
        return resolve_network_file(SOURCES[key])
    except MetricUnavailable as e:
        pytest.skip(f"real metric network not set up here ({e})")
