"""One GPU per process in batch jobs (audit D1, D2, D3): the local rank from torchrun or Slurm picks the GPU of
encode, decode and predict, ``examples/preprocess.sh`` spreads its encoders over the GPUs, and a process without a
GPU of its own fails with one line. All on the CPU: CUDA is played by monkeypatching ``torch.cuda``."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pvvae_cli.cli.app import app
from pvvae_cli.runtime import distributed as dist
from pvvae_cli.runtime.device import DEVICE_ENV

CPU = torch.device("cpu")
LAUNCHER_ENV = ("LOCAL_RANK", "SLURM_LOCALID", "SLURM_GPUS_PER_TASK", "RANK", "WORLD_SIZE")


@pytest.mark.parametrize("env, rank", [
    ({}, None),
    ({"LOCAL_RANK": "1"}, 1),  # torchrun
    ({"SLURM_LOCALID": "2"}, 2),  # srun tasks
    ({"LOCAL_RANK": "0", "SLURM_LOCALID": "3"}, 0),  # torchrun started by srun: torchrun's processes
    ({"LOCAL_RANK": " "}, None),
])
def test_local_rank_from_env(env, rank):
    assert dist.local_rank_from_env(env) == rank


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_local_rank_must_be_a_process_index(value):
    with pytest.raises(ValueError, match=f"SLURM_LOCALID={value!r} is not a process index"):
        dist.local_rank_from_env({"SLURM_LOCALID": value})


@pytest.mark.parametrize("env, count, gpu", [
    ({}, 4, None),  # one process: a bare cuda stays the current device
    ({"LOCAL_RANK": "0"}, 1, 0),
    ({"LOCAL_RANK": "3"}, 4, 3),
    ({"SLURM_LOCALID": "1"}, 2, 1),
    ({"SLURM_LOCALID": "3", "SLURM_GPUS_PER_TASK": "1"}, 1, 0),  # Slurm bound one GPU to each task
    ({"SLURM_LOCALID": "1", "SLURM_GPUS_PER_TASK": "2"}, 2, 0),  # two of its own: its first
    ({"SLURM_LOCALID": "3", "SLURM_GPUS_PER_TASK": "1"}, 4, 3),  # not bound: every task sees the node's GPUs
])
def test_local_gpu_is_a_function_of_env_and_gpu_count(env, count, gpu):
    assert dist.local_gpu(env, count) == (None if gpu is None else torch.device("cuda", gpu))


@pytest.mark.parametrize("env", [
    {"LOCAL_RANK": "2"}, {"SLURM_LOCALID": "2"}, {"LOCAL_RANK": "2", "SLURM_GPUS_PER_TASK": "1"},
])
def test_more_local_ranks_than_gpus_fail_with_one_line(env):
    with pytest.raises(ValueError, match=r"LOCAL_RANK 2 has no GPU: 2 visible on this node.*--nproc_per_node 2"):
        dist.local_gpu(env, 2)


@pytest.fixture
def two_gpus(monkeypatch):
    """Play a node with two GPUs; returns the list of devices ``torch.cuda.set_device`` was given."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    for key in (*LAUNCHER_ENV, DEVICE_ENV):
        monkeypatch.delenv(key, raising=False)
    return current


@pytest.mark.parametrize("name, env, want", [
    ("cuda", {"LOCAL_RANK": "1"}, torch.device("cuda", 1)),  # D1: a bare cuda under torchrun
    ("auto", {"LOCAL_RANK": "1"}, torch.device("cuda", 1)),
    ("cuda", {"SLURM_LOCALID": "1"}, torch.device("cuda", 1)),  # ... and under Slurm tasks
    ("auto", {"SLURM_LOCALID": "1", DEVICE_ENV: "cpu"}, CPU),  # PVVAE_DEVICE decides what auto means
    ("auto", {"LOCAL_RANK": "1", DEVICE_ENV: "cuda:0"}, torch.device("cuda", 0)),
    ("auto", {"LOCAL_RANK": "1", DEVICE_ENV: "cuda"}, torch.device("cuda", 1)),
    ("cuda:0", {"LOCAL_RANK": "1"}, torch.device("cuda", 0)),  # an explicit GPU is the user's choice
    ("cpu", {"LOCAL_RANK": "1"}, CPU),
    ("cuda", {}, torch.device("cuda")),  # one process: as before
])
def test_process_device(two_gpus, monkeypatch, name, env, want):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert dist.process_device(name) == want
    assert two_gpus == ([want] if want.type == "cuda" and want.index is not None else [])


def test_process_device_checks_the_local_rank_against_the_gpus(two_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK 2 has no GPU"):
        dist.process_device("cuda")
    assert two_gpus == []
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert dist.process_device("auto") == CPU  # the CPU needs no GPU per process


@pytest.mark.parametrize("args", [
    ["encode", "{tmp}/none", "-o", "{tmp}/out"],
    ["decode", "{tmp}/none", "-o", "{tmp}/out"],
    ["predict", "{tmp}/none.mp4", "-o", "{tmp}/out.mp4"],
])
def test_batch_commands_take_the_process_gpu(two_gpus, monkeypatch, tmp_path, args):
    """encode, decode and predict choose their device through ``process_device``: a third process on a node of two
    GPUs stops before any work with its one line (exit 2)."""
    monkeypatch.setenv("LOCAL_RANK", "2")
    args = [a.format(tmp=tmp_path) for a in args] + ["--model", "preset:tiny", "--device", "cuda"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "LOCAL_RANK 2 has no GPU: 2 visible on this node" in res.output
    assert not (tmp_path / "out").exists()


# ---- examples/preprocess.sh spreads its encoders over the GPUs (D2)

PREPROCESS = Path(__file__).resolve().parents[1] / "examples" / "preprocess.sh"
FAKE_PVVAE = "#!/usr/bin/env bash\necho \"args: $*\" >&2\n"  # each encoder's arguments land in its shard log


def _preprocess(tmp_path, jobs, **env) -> list[str]:
    fake = tmp_path / "pvvae"
    fake.write_text(FAKE_PVVAE)
    fake.chmod(0o755)
    (tmp_path / "src").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in (DEVICE_ENV, "CUDA_VISIBLE_DEVICES", "ENCODE_ARGS")}
    res = subprocess.run(["bash", str(PREPROCESS), tmp_path / "src", tmp_path / "out", str(jobs)], text=True,
                         capture_output=True, env=base | {"PVVAE": str(fake), "THREADS": "1"} | env)
    assert res.returncode == 0, res.stderr
    return [(tmp_path / "out" / "logs" / f"shard-{i}.log").read_text() for i in range(jobs)]


def _device(log: str) -> str | None:
    args = log.split()
    return args[args.index("--device") + 1] if "--device" in args else None


def test_preprocess_gives_each_encoder_a_gpu(tmp_path):
    logs = _preprocess(tmp_path, 3, GPUS="2")
    assert [_device(log) for log in logs] == ["cuda:0", "cuda:1", "cuda:0"]
    assert all(f"--shard {i}/3" in log for i, log in enumerate(logs))


def test_preprocess_counts_the_visible_gpus(tmp_path):
    assert [_device(log) for log in _preprocess(tmp_path, 2, CUDA_VISIBLE_DEVICES="3,5")] == ["cuda:0", "cuda:1"]
    assert [_device(log) for log in _preprocess(tmp_path, 2, CUDA_VISIBLE_DEVICES="")] == [None, None]


@pytest.mark.parametrize("env", [
    {"GPUS": "0"},  # the CPU: as before, no --device
    {"GPUS": "2", "ENCODE_ARGS": "--device cpu"},  # the user's device wins
    {"GPUS": "2", DEVICE_ENV: "cpu"},  # what --device auto means here (the test suite's setting)
])
def test_preprocess_leaves_the_device_alone(tmp_path, env):
    logs = _preprocess(tmp_path, 2, **env)
    assert [log.split().count("--device") for log in logs] == [int("ENCODE_ARGS" in env)] * 2


# ---- resuming a batch on another device kind (audit P6)

def _meta(options, dtype):
    from pvvae_cli.codec.latents import LatentMeta
    from pvvae_cli.codec.pipeline import DTYPE_NAMES

    return LatentMeta(model="preset:tiny", config_hash="c", latent_channels=8, model_tag="t4s16c8", normalized=False,
                      posterior="mode", source="a.mp4", fps=8.0, num_frames=5, height=32, width=32, encoded_frames=5,
                      encoded_height=32, encoded_width=32, dtype=DTYPE_NAMES[dtype], options_hash=options.digest(dtype))


def test_options_mismatch_names_a_changed_dtype():
    """A latent written on the CPU (auto: fp32), checked by a run on a GPU (auto: bf16): the options differ only in
    the dtype, and the reason says so and how to continue."""
    from pvvae_cli.codec.latents import options_mismatch
    from pvvae_cli.codec.pipeline import EncodeOptions

    options = EncodeOptions(num_frames=5)
    meta = _meta(options, torch.float32)
    why = options_mismatch(meta, options.digest, torch.bfloat16, torch.device("cuda", 1))
    assert why == ("other encode options: written with dtype fp32, this run computes in bf16 on cuda (--dtype auto "
                   "is bf16 on CUDA, fp32 on the CPU); pass --dtype fp32 to continue with the same options")
    assert "pass --dtype bf16" in options_mismatch(_meta(options, torch.bfloat16), options.digest, torch.float32, CPU)
    other = EncodeOptions(num_frames=9)  # something else differs too: no advice about the dtype
    assert options_mismatch(meta, other.digest, torch.bfloat16, torch.device("cuda")) == "other encode options"
    assert options_mismatch(_meta(other, torch.float32), options.digest, torch.float32, CPU) == "other encode options"
