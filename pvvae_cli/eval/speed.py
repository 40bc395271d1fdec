"""The paper's inference speed protocol: steps per second and peak memory of encode + decode on random clips.

On the CPU the peak memory is the process's peak resident set size, which only grows: measured in the evaluating
process it would include every model and clip handled before. ``measure_speed_isolated`` therefore runs each
model's protocol in a fresh process (spawned, given only the model), so a model's figure does not depend on what
else was evaluated or in which order. The protocol reports its progress (a time estimate after the first step,
then a line every ``PROGRESS_EVERY_S`` seconds): the paper's 50 + 100 steps take minutes per model on a CPU.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from collections.abc import Callable
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
    """This process's peak resident set size. Linux: ``VmHWM`` (of this program image: ``ru_maxrss`` would keep
    the peak of the process a spawned child was forked from, across exec). Elsewhere ``ru_maxrss`` (KiB on Linux
    and BSD, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


PROGRESS_EVERY_S = 30.0


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@torch.no_grad()
def measure_speed(vae: VideoAutoencoder, protocol: SpeedProtocol, dtype: torch.dtype = torch.float32,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Time ``protocol`` on the model's device: it/s (steps per second), seconds per step, and peak memory
    (CUDA: ``max_memory_allocated`` during the timed steps; CPU: this process's peak RSS, labelled as such)."""
    say = progress or (lambda _msg: None)
    protocol.check_model(vae)
    device = next(vae.parameters()).device
    x = torch.rand(protocol.batch, 3, protocol.frames, protocol.size, protocol.size, device=device) * 2 - 1

    def step() -> None:
        with autocast(device, dtype):
            vae.decode(vae.encode(x).mode())
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    total = protocol.warmup + protocol.steps
    last_said = [time.perf_counter()]

    def tick(done: int, started: float) -> None:
        now = time.perf_counter()
        if done == 1:
            say(f"speed: first step {now - started:.2f} s: about {_minutes((now - started) * total)} for "
                f"{protocol.warmup} warm-up + {protocol.steps} timed steps (--speed-warmup/--speed-steps shorten it)")
            last_said[0] = now
        elif now - last_said[0] >= PROGRESS_EVERY_S:
            say(f"speed: step {done}/{total}")
            last_said[0] = now

    begin = time.perf_counter()
    for i in range(protocol.warmup):
        step()
        tick(i + 1, begin)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(protocol.steps):
        step()
        tick(protocol.warmup + i + 1, begin)
    elapsed = time.perf_counter() - t0
    out = asdict(protocol) | {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                              "seconds_per_step": elapsed / protocol.steps, "it_s": protocol.steps / elapsed}
    if device.type == "cuda":
        out |= {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "memory_measure": "torch.cuda.max_memory_allocated during the timed steps"}
    else:
        out |= {"peak_memory_gib": _peak_rss_gib(),
                "memory_measure": "process peak RSS (VmHWM / ru_maxrss; the whole process, CPU)"}
    return out


def measure_speed_isolated(vae: VideoAutoencoder, protocol: SpeedProtocol, dtype: torch.dtype = torch.float32,
                           progress: Callable[[str], None] | None = None) -> dict:
    """``measure_speed``, on the CPU in a fresh spawned process that holds only this model, so that the peak RSS
    is this model's alone (labelled so). On CUDA the peak is per timed steps already: measured in this process."""
    device = next(vae.parameters()).device
    if device.type != "cpu":
        return measure_speed(vae, protocol, dtype, progress)
    say = progress or (lambda _msg: None)
    ctx = mp.get_context("spawn")  # fork would copy this process's memory (and its peak) into the child
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_speed_child, args=(vae, protocol, dtype, torch.get_num_threads(), send),
                        name="pvvae-speed", daemon=True)
    child.start()
    send.close()
    try:
        while True:
            try:
                kind, value = receive.recv()
            except EOFError:
                child.join()
                raise RuntimeError(f"the speed measurement process died (exit code {child.exitcode})") from None
            if kind == "say":
                say(value)
            elif kind == "error":
                raise ValueError(value)
            else:
                return value
    finally:
        receive.close()
        child.join(timeout=30)


def _speed_child(vae: VideoAutoencoder, protocol: SpeedProtocol, dtype: torch.dtype, threads: int, send) -> None:
    torch.set_num_threads(threads)
    try:
        out = measure_speed(vae, protocol, dtype, progress=lambda msg: send.send(("say", msg)))
        out["memory_measure"] = ("peak RSS of a separate process holding only this model (VmHWM / ru_maxrss; the "
                                 "model, torch and the protocol's tensors, CPU)")
        send.send(("done", out))
    except Exception as e:  # noqa: BLE001 - reported by the parent
        send.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        send.close()
