"""Device and precision choices (``runtime/device.py``) and the process-group setup of torchrun runs
(``runtime/distributed.py``), on the CPU: CUDA branches that only set flags or pick devices are checked with a
``torch.device("cuda")`` object and stand-ins for the calls that need a GPU."""

from datetime import timedelta

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pvvae_cli.cli.app import app
from pvvae_cli.media.writer import write_video
from pvvae_cli.runtime import device as dev
from pvvae_cli.runtime import distributed as dist

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ---- bf16 on the CPU


def test_cpu_bf16_probe_is_cached_and_can_be_forced(monkeypatch):
    dev.cpu_bf16_supported.cache_clear()
    try:
        answer = dev.cpu_bf16_supported()
        assert isinstance(answer, bool) and dev.cpu_bf16_supported() is answer
        assert dev.cpu_bf16_supported.cache_info().hits >= 1  # probed once
        for value, expected in (("0", False), ("1", True)):
            monkeypatch.setenv(dev.CPU_BF16_ENV, value)
            dev.cpu_bf16_supported.cache_clear()
            assert dev.cpu_bf16_supported() is expected
        monkeypatch.setenv(dev.CPU_BF16_ENV, "no")
        dev.cpu_bf16_supported.cache_clear()
        with pytest.raises(ValueError, match="PVVAE_CPU_BF16='no'.*use 0"):
            dev.cpu_bf16_supported()
    finally:
        monkeypatch.undo()
        dev.cpu_bf16_supported.cache_clear()


def test_without_cpu_bf16_bf16_is_refused_and_auto_is_fp32(no_cpu_bf16, monkeypatch):
    def no_probe(threads):
        raise AssertionError("the bf16 speed probe ran on a CPU without bf16 (it would crash there)")

    monkeypatch.setattr(dev, "_measure_cpu_bf16_speedup", no_probe)
    with pytest.raises(ValueError, match=r"not supported on this CPU.*use --dtype fp32") as e:
        dev.resolve_dtype("bf16", CPU)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="--precision fp32"):
        dev.resolve_training_dtype("bf16", CPU)
    assert dev.resolve_dtype("auto", CPU) == torch.float32
    assert dev.resolve_training_dtype("auto", CPU) == torch.float32
    assert dev.cpu_bf16_speedup() == 0.0
    assert dev.resolve_dtype("fp32", CPU) == torch.float32
    assert dev.resolve_dtype("bf16", CUDA) == torch.bfloat16  # a GPU's bf16 does not depend on the CPU


def test_encode_refuses_bf16_up_front_on_a_cpu_without_it(tmp_path, no_cpu_bf16):
    """``pvvae encode --dtype bf16`` on a CPU without bf16 (AMD Zen 3, played by PVVAE_CPU_BF16=0): one line naming
    the fix and the usage exit code 2, before any input is read or output written (not one failure per file)."""
    for name in ("a", "b"):
        write_video(tmp_path / "in" / f"{name}.png", np.zeros((1, 32, 32, 3), np.uint8), fps=0)
    res = CliRunner().invoke(app, ["encode", str(tmp_path / "in"), "-o", str(tmp_path / "lat"), "-m", "preset:tiny",
                                   "--dtype", "bf16", "--device", "cpu", "-q"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [f"error: {dev.CPU_BF16_UNSUPPORTED}"]
    assert not (tmp_path / "lat").exists()


# ---- device selection


def test_pvvae_device_pins_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    assert dev.resolve_device("auto") == CUDA
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    assert dev.resolve_device("auto") == CPU
    assert dev.resolve_device() == CPU
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit device wins
    monkeypatch.setenv(dev.DEVICE_ENV, "tpu0")
    with pytest.raises(ValueError, match="PVVAE_DEVICE='tpu0'.*unknown device"):
        dev.resolve_device("auto")


def test_the_suite_runs_on_the_cpu():
    import os

    assert os.environ[dev.DEVICE_ENV] == "cpu"  # set by conftest, inherited by CLI subprocesses
    assert dev.resolve_device("auto") == CPU


# ---- precision policy


@pytest.fixture
def restore_precision_flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
    yield saved
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])
    torch.backends.cudnn.benchmark = saved[3]


def test_precision_policy_on_cpu_changes_nothing(restore_precision_flags):
    assert dev.apply_precision_policy(CPU, strict_fp32=False) == {"tf32": False, "cudnn_benchmark": False}
    assert dev.apply_precision_policy(CPU, strict_fp32=True) == {"tf32": False, "cudnn_benchmark": False}
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark) == restore_precision_flags


def test_precision_policy_on_cuda_sets_tf32_unless_strict(restore_precision_flags):
    # Setting backend flags needs no GPU.
    record = dev.apply_precision_policy(torch.device("cuda", 0), strict_fp32=False)
    assert record == {"tf32": True, "cudnn_benchmark": True}
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.benchmark
    record = dev.apply_precision_policy(CUDA, strict_fp32=True)
    assert record == {"tf32": False, "cudnn_benchmark": True}
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.benchmark


# ---- process group (torchrun)


def test_collective_timeout(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert dist.collective_timeout() == timedelta(minutes=60)
    monkeypatch.setenv(dist.TIMEOUT_ENV, "90")
    assert dist.collective_timeout() == timedelta(minutes=90)
    for bad in ("0", "-5", "soon", "nan"):
        monkeypatch.setenv(dist.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match="PVVAE_DIST_TIMEOUT_MIN.*minutes > 0"):
            dist.collective_timeout()


def test_local_cuda_device_needs_a_gpu_per_process():
    assert dist.local_cuda_device(1, 2) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="LOCAL_RANK 1 has no GPU") as e:
        dist.local_cuda_device(1, 1)
    assert "--nproc_per_node 1" in str(e.value) and "CUDA_VISIBLE_DEVICES" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.fixture
def fake_group(monkeypatch):
    """torchrun's environment for rank 1 of 2 and a record of the process-group and CUDA calls (nothing joined)."""
    calls = {"init": [], "set_device": []}
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.dist, "init_process_group", lambda *a, **k: calls["init"].append((a, k)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(d))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return calls


def test_init_distributed_on_cpu_uses_gloo_with_the_timeout(fake_group, monkeypatch):
    monkeypatch.setenv(dist.TIMEOUT_ENV, "5")
    info, device = dist.init_distributed(CPU)
    assert (info.rank, info.world, info.local_rank, device) == (1, 2, 1, CPU)
    assert fake_group["init"] == [(("gloo",), {"timeout": timedelta(minutes=5)})]
    assert fake_group["set_device"] == []


def test_init_distributed_on_cuda_binds_local_rank(fake_group, monkeypatch):
    info, device = dist.init_distributed(CUDA)
    assert device == torch.device("cuda", 1)
    assert fake_group["set_device"] == [device]
    assert fake_group["init"] == [(("nccl",), {"timeout": timedelta(minutes=60), "device_id": device})]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # --nproc_per_node 2 on a 1-GPU node
    with pytest.raises(ValueError, match="--nproc_per_node 1"):
        dist.init_distributed(CUDA)


def test_single_process_sets_an_indexed_cuda_device(fake_group, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    info, device = dist.init_distributed(torch.device("cuda", 1))
    assert not info.enabled and device == torch.device("cuda", 1)
    assert fake_group["set_device"] == [device] and fake_group["init"] == []
    dist.init_distributed(CUDA)  # no index: the current device, whatever it is
    dist.init_distributed(CPU)
    assert fake_group["set_device"] == [device]


def test_wrap_ddp_passes_find_unused_parameters(monkeypatch):
    made = []
    monkeypatch.setattr(dist, "DDP", lambda module, **kwargs: made.append(kwargs) or module)
    module = torch.nn.Linear(2, 2)
    assert dist.wrap_ddp(module, dist.DistInfo(), CPU) is module and made == []  # one process: no wrapper
    two = dist.DistInfo(rank=0, world=2)
    dist.wrap_ddp(module, two, CPU)
    dist.wrap_ddp(module, two, torch.device("cuda", 1), find_unused_parameters=True)
    assert made == [
        {"device_ids": None, "find_unused_parameters": False, "gradient_as_bucket_view": True},
        {"device_ids": [1], "find_unused_parameters": True, "gradient_as_bucket_view": True},
    ]
