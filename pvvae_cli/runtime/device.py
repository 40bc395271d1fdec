"""The one place that decides device, dtype and autocast."""

from __future__ import annotations

import contextlib
import functools
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU. Raises ``ValueError`` for an unusable device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute precision. ``auto``: bf16 on CUDA when supported, fp32 on CPU."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is not supported on the CPU; use --dtype bf16 or fp32")
    return DTYPES[name]


# bf16 autocast must beat fp32 by this factor on the probe to be chosen for CPU training: the probe is short, and
# a near tie is not worth bf16's rounding.
CPU_BF16_MIN_SPEEDUP = 1.25


@functools.cache
def cpu_bf16_speedup(threads: int | None = None) -> float:
    """fp32 time / bf16-autocast time of a 3-D conv's forward + backward on this CPU (a probe of ~0.5 s).

    Which is faster depends on the CPU, not on pvvae: measured on the build machines, bf16 ran at 0.68x the fp32
    speed on Intel CPUs without AMX and at ~1.8x on AMD EPYC with AVX512-BF16 (``benchmarks/bench_throughput.py``
    shows it for a whole training step). ``threads`` only keys the cache (the probe uses torch's current setting).
    """
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.randn(2, 32, 5, 32, 32, requires_grad=True)

    def best(dtype: torch.dtype) -> float:
        times = []
        for _ in range(4):  # the first call pays one-time setup (kernel selection); the minimum of the rest
            t0 = time.perf_counter()
            with autocast(torch.device("cpu"), dtype):
                y = conv(x)
            y.float().sum().backward()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    with torch.random.fork_rng(devices=[]):
        return best(torch.float32) / best(torch.bfloat16)


def resolve_training_dtype(name: str, device: torch.device) -> torch.dtype:
    """Training precision. ``auto``: bf16 autocast on CUDA when supported; on the CPU the faster of fp32 and bf16
    as measured here (``cpu_bf16_speedup``); otherwise as ``resolve_dtype``."""
    if name == "auto" and device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_speedup(torch.get_num_threads()) >= CPU_BF16_MIN_SPEEDUP else torch.float32
    return resolve_dtype(name, device)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``dtype`` (a no-op for fp32). Weights stay fp32; matmuls and convs run
    in ``dtype``, reductions such as norms in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
