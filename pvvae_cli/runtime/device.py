"""The one place that decides device, dtype, autocast and the CUDA precision policy.

Environment variables (for users and for the tests):

- ``PVVAE_DEVICE``: what ``--device auto`` means, e.g. ``cpu`` to keep a GPU host's runs (and the test suite) on the
  CPU. Unset: CUDA when available, else the CPU.
- ``PVVAE_CPU_BF16``: ``0`` declares that this CPU cannot run bf16 (``--dtype bf16`` is refused, ``auto`` never
  picks it), as on CPUs without AVX-512; ``1`` skips the check. Unset: found out once per process
  (``cpu_bf16_supported``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_ENV = "PVVAE_DEVICE"
CPU_BF16_ENV = "PVVAE_CPU_BF16"
CPU_BF16_UNSUPPORTED = ("bf16 is not supported on this CPU (its bf16 convolutions need AVX512BW/VL/DQ or "
                        "AVX-NE-CONVERT); use --dtype fp32 (--precision fp32 when training)")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is ``$PVVAE_DEVICE`` when that is set, else CUDA when available, else CPU. Raises ``ValueError`` for
    an unusable device."""
    if name == "auto":
        pinned = os.environ.get(DEVICE_ENV, "").strip()
        if pinned and pinned != "auto":
            try:
                return resolve_device(pinned)
            except ValueError as e:
                raise ValueError(f"{DEVICE_ENV}={pinned!r} (what --device auto means here): {e}") from None
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return device


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU can run pvvae's bf16 convolutions; found out once per process (a few milliseconds).

    oneDNN's bf16 convolution needs AVX512BW + AVX512VL + AVX512DQ or AVX-NE-CONVERT on x86 (the BF16 extension on
    Arm). Elsewhere, e.g. AMD Zen 3 or Intel client CPUs without AVX-512, it raises "mkldnn_convolution: bf16 path
    needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq" at the first convolution. CPU
    inference calls that op directly (``models/causal_conv.py``), so the probe is a 1x1x1 bf16 convolution through
    it, and through ``F.conv3d`` (the training path).

    ``PVVAE_CPU_BF16=0`` forces the answer to False (tests use it to play a CPU without AVX-512); ``=1`` to True.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{CPU_BF16_ENV}={forced!r}: use 0 (no bf16 on this CPU) or 1, or unset it to detect")
    x = torch.zeros(1, 1, 1, 1, 1, dtype=torch.bfloat16)
    try:
        with torch.no_grad():
            if torch.backends.mkldnn.is_available():
                torch.ops.aten.mkldnn_convolution(x, x, None, (0, 0, 0), (1, 1, 1), (1, 1, 1), 1)
            torch.nn.functional.conv3d(x, x)
    except RuntimeError:
        return False
    return True


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute precision. ``auto``: bf16 on CUDA when supported, fp32 on CPU. bf16 on a CPU that cannot run it
    (``cpu_bf16_supported``) is a ``ValueError`` naming the fix, raised before any work."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is not supported on the CPU; use --dtype bf16 or fp32")
    if name == "bf16" and device.type == "cpu" and not cpu_bf16_supported():
        raise ValueError(CPU_BF16_UNSUPPORTED)
    return DTYPES[name]


# bf16 autocast must beat fp32 by this factor on the probe to be chosen for CPU training: the probe is short, and
# a near tie is not worth bf16's rounding.
CPU_BF16_MIN_SPEEDUP = 1.25


def cpu_bf16_speedup(threads: int | None = None) -> float:
    """fp32 time / bf16-autocast time of a 3-D conv's forward + backward on this CPU (a probe of ~0.5 s, measured
    once per ``threads``).

    Which is faster depends on the CPU, not on pvvae: measured on the build machines, bf16 ran at 0.68x the fp32
    speed on Intel CPUs without AMX and at ~1.8x on AMD EPYC with AVX512-BF16 (``benchmarks/bench_throughput.py``
    shows it for a whole training step). ``threads`` only keys the cache (the probe uses torch's current setting).
    0.0 without probing on a CPU that cannot run bf16 (``cpu_bf16_supported``): the probe would crash there.
    """
    if not cpu_bf16_supported():
        return 0.0
    return _measure_cpu_bf16_speedup(threads)


@functools.cache
def _measure_cpu_bf16_speedup(threads: int | None) -> float:
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
    as measured here (``cpu_bf16_speedup``), fp32 where it cannot run bf16; otherwise as ``resolve_dtype``."""
    if name == "auto" and device.type == "cpu":
        if not cpu_bf16_supported():
            return torch.float32
        return torch.bfloat16 if cpu_bf16_speedup(torch.get_num_threads()) >= CPU_BF16_MIN_SPEEDUP else torch.float32
    return resolve_dtype(name, device)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``dtype`` (a no-op for fp32). Weights stay fp32; matmuls and convs run
    in ``dtype``, reductions such as norms in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def apply_precision_policy(device: torch.device, strict_fp32: bool = False) -> dict:
    """Set the process-wide fp32 policy for ``device`` and return what was set (JSON-ready, for the run's log).

    On CUDA: TF32 for fp32 matmuls and cuDNN convolutions (``float32_matmul_precision`` "high"), unless
    ``strict_fp32`` (then IEEE fp32 everywhere, "highest"): cuDNN already uses TF32 for convolutions by default
    while matmuls do not, so without a policy "fp32" is neither exact nor fast. ``cudnn.benchmark``: training
    shapes are fixed, so the fastest convolution algorithm is searched once per shape. On the CPU nothing changes.
    """
    if device.type != "cuda":
        return {"tf32": False, "cudnn_benchmark": False}
    tf32 = not strict_fp32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = True
    return {"tf32": tf32, "cudnn_benchmark": True}
