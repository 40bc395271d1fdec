"""The paper's inference speed protocol: steps per second and peak memory of encode + decode on random clips."""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from pvvae_cli.frames import check_frame_count
from pvvae_cli.runtime.device import autocast

if TYPE_CHECKING:
    from pvvae_cli.models.protocol import VideoAutoencoder


@dataclass(frozen=True)
class SpeedProtocol:
    """``batch`` clips of ``frames`` frames at ``size``, ``warmup`` steps, then the mean of ``steps`` timed steps;
    one step = encode (posterior mode) + decode."""

    frames: int = 17
    batch: int = 4
    size: int = 256
    warmup: int = 50
    steps: int = 100

    def __post_init__(self) -> None:
        if min(self.frames, self.batch, self.steps) < 1 or self.warmup < 0:
            raise ValueError(f"speed protocol: frames, batch and steps must be >= 1 and warmup >= 0, got frames "
                             f"{self.frames}, batch {self.batch}, steps {self.steps}, warmup {self.warmup}")

    def check_model(self, vae: VideoAutoencoder) -> None:
        """Raise ``ValueError`` unless ``frames`` follows the model's temporal factor."""
        check_frame_count(self.frames, vae.config.temporal_compression, "speed frames")


def _peak_rss_gib() -> float:
    # ru_maxrss is KiB on Linux: the whole process's peak, not one step's.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@torch.no_grad()
def measure_speed(vae: VideoAutoencoder, protocol: SpeedProtocol, dtype: torch.dtype = torch.float32) -> dict:
    """Time ``protocol`` on the model's device: it/s (steps per second), seconds per step, and peak memory
    (CUDA: ``max_memory_allocated`` during the timed steps; CPU: the process's peak RSS, labelled as such)."""
    protocol.check_model(vae)
    device = next(vae.parameters()).device
    x = torch.rand(protocol.batch, 3, protocol.frames, protocol.size, protocol.size, device=device) * 2 - 1

    def step() -> None:
        with autocast(device, dtype):
            vae.decode(vae.encode(x).mode())
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(protocol.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(protocol.steps):
        step()
    elapsed = time.perf_counter() - t0
    out = asdict(protocol) | {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                              "seconds_per_step": elapsed / protocol.steps, "it_s": protocol.steps / elapsed}
    if device.type == "cuda":
        out |= {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "memory_measure": "torch.cuda.max_memory_allocated during the timed steps"}
    else:
        out |= {"peak_memory_gib": _peak_rss_gib(),
                "memory_measure": "process peak RSS (ru_maxrss; the whole process, CPU)"}
    return out
