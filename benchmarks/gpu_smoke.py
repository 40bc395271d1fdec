"""GPU smoke and speed check (issue 27): the CLI's GPU paths, end to end, in a few minutes on one GPU.

Usage: bash benchmarks/gpu_smoke.sh [--device cuda|cpu] [--quick] [--out DIR] [--budget SECONDS] [--bench-cap S]

Steps (each timed and printed as one row of the final table; a failed step does not stop the others):

a. encode + decode of synthetic clips (panning texture + moving square, written with ``write_video``) through the
   CLI, with the shipped model (the default without ``--model``) and with ``--model preset:base`` (random weights:
   a pipeline and speed check only);
b. one run of 2 optimiser steps of each stage through the CLI (``train --stage image``, ``--stage video``,
   ``finetune-decoder``) from the shipped weights on ``synthetic:mix``, bf16; the video stage again with
   ``--grad-checkpoint`` and with ``--compile``; ``train --preset base --estimate-memory --grad-checkpoint``; and a
   probe of the audit's X4/X5: a run made on the CPU (with EMA) resumed on the device;
c. 2-rank nccl DDP through ``torchrun`` (only with >= 2 GPUs);
d. ``gen train`` on the latents of (a), then ``gen sample``;
e. CPU-vs-device parity of encode + decode (shipped model): max abs latent difference and PSNR difference;
f. throughput: PV-VAE (shipped and ``preset:base``) vs diffusers' ``AutoencoderKLWan`` (random weights, default
   Wan2.1 config), encode and decode separately, the paper's protocol (17x256x256, batch 4, 50 warm-up iterations,
   then the mean of 100), each model and direction capped in time (the counts actually run are printed).

``--quick`` runs the same steps at toy sizes (9x64x64 clips, batch 1, 2 + 3 iterations, preset tiny for base and
for gen); ``--device cpu`` uses fp32 wherever bf16 would be asked (not every CPU runs bf16) and says so. Nothing is
written into the repository: everything goes to ``--out`` (kept) or a temporary folder (removed unless a step
failed). Peak GPU memory is ``torch.cuda.max_memory_allocated`` of the step's process (train and gen train rows:
``max_mem_gb`` of their metrics.jsonl): the CLI commands run as ``python -c LAUNCHER ...``, which is the
console script's ``main()`` plus an exit hook that writes the peak.

A global ``--budget`` (default 480 s, the 8 minutes an H100 user is promised) bounds the whole run: each step's cap
is cut to what is left, and a step that finds the budget spent is reported as not run (a failure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEAK_ENV = "PVVAE_SMOKE_PEAK_FILE"

# The console script's main() with an exit hook that records the process's peak GPU memory: the CLI itself reports
# none for encode/decode/sample. Torch is imported at exit only if the command imported it.
LAUNCHER = f"""\
import atexit, os, sys
def _peak():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        with open(os.environ["{PEAK_ENV}"], "w") as f:
            f.write(repr(torch.cuda.max_memory_allocated() / 2**30))
atexit.register(_peak)
sys.argv[0] = "pvvae"
from pvvae_cli.cli.app import main
main()
"""


@dataclass(frozen=True)
class Plan:
    """Sizes, counts and time caps (seconds) of one mode."""

    frames: int  # clips of (a), (d), (e)
    size: int
    clips: int
    train_frames: int  # (b), (c)
    train_size: int
    train_batch: int
    workers: int
    bench_frames: int  # (f)
    bench_size: int
    bench_batch: int
    warmup: int
    timed: int
    bench_cap: float  # per model and direction
    heavy: str  # the preset standing in for base
    gen_preset: str
    gen_batch: int
    cli_cap: float
    train_cap: float
    compile_cap: float


FULL = Plan(frames=17, size=256, clips=4, train_frames=17, train_size=256, train_batch=4, workers=2,
            bench_frames=17, bench_size=256, bench_batch=4, warmup=50, timed=100, bench_cap=30.0, heavy="base",
            gen_preset="S", gen_batch=4, cli_cap=150.0, train_cap=180.0, compile_cap=240.0)
# The CPU quick mode must fit ~3 minutes on 2 shared cores: most of a CLI call there is start-up, so the sizes are
# as small as the models allow (s16: 32 px is a 2x2 latent).
QUICK = Plan(frames=9, size=64, clips=3, train_frames=5, train_size=32, train_batch=1, workers=0,
             bench_frames=9, bench_size=64, bench_batch=1, warmup=2, timed=3, bench_cap=8.0, heavy="tiny",
             gen_preset="tiny", gen_batch=2, cli_cap=90.0, train_cap=90.0, compile_cap=180.0)
# A cold inductor compile on the CPU takes ~2 minutes on 2 cores (C++ kernels), more than the whole quick budget:
# on the CPU the compile step is capped short, and reaching that cap is reported, not counted as a failure.
CPU_COMPILE_CAP = 20.0
MIN_STEP_S = 5.0  # a step that would get less than this is not started


class StepFailed(Exception):
    """A step's check failed; the message is the table's result."""


@dataclass
class Row:
    key: str
    what: str
    seconds: float
    peak_gib: float | None
    status: str  # ok | FAIL | skipped | capped
    result: str


@dataclass
class Proc:
    rc: int
    output: str
    seconds: float
    peak_gib: float | None
    timed_out: bool
    cap: float
    budget_cut: bool = False


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of one shape (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def synthetic_clip(frames: int, size: int, seed: int) -> np.ndarray:
    """uint8 ``(T, size, size, 3)``: a smooth random texture panning diagonally with a bright square moving across it
    (motion the predictive model has to carry; no file needed)."""
    rng = np.random.default_rng(seed)
    big = size * 2
    yy, xx = np.mgrid[0:big, 0:big] / big
    texture = np.zeros((big, big, 3))
    for c in range(3):  # a few random sinusoids per channel
        for _ in range(3):
            fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
            texture[..., c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    texture = ((texture - texture.min()) / (np.ptp(texture) + 1e-9) * 200 + 20).astype(np.uint8)
    out = np.empty((frames, size, size, 3), np.uint8)
    sq, colour = max(size // 8, 4), rng.integers(200, 256, 3)
    for t in range(frames):
        off = (t * max(size // 32, 1)) % size
        out[t] = texture[off : off + size, off // 2 : off // 2 + size]
        x = (size // 8 + t * max(size // 16, 1)) % (size - sq)
        out[t, size // 3 : size // 3 + sq, x : x + sq] = colour
    return out


def read_frames(path: Path) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` of a video file or of a folder of PNG frames (``decode --format png``)."""
    from pvvae_cli.media.video_io import read_clip

    if path.is_dir():
        return np.concatenate([read_clip(p)[0] for p in sorted(path.glob("*.png"))], axis=0)
    return read_clip(path)[0]


def mean_psnr(sources: list[Path], recon_dir: Path, suffix: str) -> float:
    values = [psnr(read_frames(s), read_frames(recon_dir / (s.stem + suffix))) for s in sources]
    return float(np.mean(values))


class Smoke:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.cuda = args.device == "cuda"
        self.plan = QUICK if args.quick else FULL
        if not self.cuda:
            self.plan = replace(self.plan, compile_cap=CPU_COMPILE_CAP)
        self.precision = "bf16" if self.cuda else "fp32"
        self.prec_note = "bf16" if self.cuda else "fp32 (CPU mode: fp32 where bf16 is asked)"
        self.deadline = time.perf_counter() + args.budget
        self.work = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="pvvae-gpu-smoke-"))
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        from pvvae_cli.models.default import shipped_weights_dir

        self.shipped = shipped_weights_dir()
        self.rows: list[Row] = []
        self.bench: list[dict] = []
        self.clips: list[Path] = []
        self.latents_dir: Path | None = None

    # ---- plumbing
    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, argv: list[str], cap: float, shown: list[str] | None = None) -> Proc:
        """Run ``argv`` in the work folder with a hard time cap (the whole process group is killed at the cap);
        its output goes to logs/NAME.log."""
        cut = self.remaining() < cap  # the --budget, not the step's own cap, limits it
        cap = max(1.0, min(cap, self.remaining()))
        log, peak_file = self.work / "logs" / f"{name}.log", self.work / "logs" / f"{name}.peak"
        env = {k: v for k, v in os.environ.items() if k not in ("PVVAE_MODEL", "PVVAE_DEVICE")}  # the defaults
        env[PEAK_ENV] = str(peak_file)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the repository, not even __pycache__/
        if not self.cuda:
            # toy sizes on a shared CPU: a second thread mostly spin-waits (measured here: a 2-step training run
            # took 20 s with 2 threads and 6 s with 1 on a loaded 2-core machine)
            env.setdefault("OMP_NUM_THREADS", "1")
        print(f"$ {shlex.join(shown or argv)}   (cap {cap:.0f} s)", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(argv, cwd=self.work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group: the cap kills workers too
            timed_out = False
            try:
                rc = proc.wait(timeout=cap)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        seconds = time.perf_counter() - t0
        peak = float(peak_file.read_text()) if peak_file.is_file() else None
        return Proc(rc, log.read_text(errors="replace"), seconds, peak, timed_out, cap, cut)

    def cli(self, name: str, *args: object, cap: float | None = None) -> Proc:
        """``pvvae ARGS`` (through LAUNCHER); raises StepFailed on a non-zero exit or at the cap."""
        argv = [str(a) for a in args]
        p = self.run(name, [sys.executable, "-c", LAUNCHER, *argv], cap or self.plan.cli_cap, ["pvvae", *argv])
        check(p, name)
        return p

    def step(self, key: str, what: str, fn: Callable[[], tuple[str, float | None] | tuple[str, float | None, str]]
             ) -> Row:
        """Run one step; ``fn`` returns (result, peak GiB[, status]) or raises. Never raises."""
        print(f"\n== {key}: {what}", flush=True)
        t0 = time.perf_counter()
        if self.remaining() < MIN_STEP_S:
            row = Row(key, what, 0.0, None, "FAIL", f"not run: the time budget ({self.args.budget:.0f} s, --budget) "
                                                    "is spent")
        else:
            try:
                out = fn()
                row = Row(key, what, time.perf_counter() - t0, out[1], out[2] if len(out) > 2 else "ok", out[0])
            except StepFailed as e:
                row = Row(key, what, time.perf_counter() - t0, None, "FAIL", str(e))
            except Exception as e:  # noqa: BLE001 - a bug in a step must not hide the others' results
                traceback.print_exc()
                row = Row(key, what, time.perf_counter() - t0, None, "FAIL", f"{type(e).__name__}: {e}")
        self.rows.append(row)
        print(f"-> {row.status} ({row.seconds:.1f} s): {row.result}", flush=True)
        return row

    def skip(self, key: str, what: str, why: str) -> None:
        self.rows.append(Row(key, what, 0.0, None, "skipped", why))
        print(f"\n== {key}: {what}\n-> skipped: {why}", flush=True)

    # ---- (a) encode + decode through the CLI
    def write_clips(self) -> tuple[str, None]:
        folder = self.work / "clips"
        p = self.plan
        for i in range(p.clips):
            from pvvae_cli.media.writer import write_video

            path = folder / f"clip{i}.mp4"
            write_video(path, synthetic_clip(p.frames, p.size, seed=i), fps=8.0)
            self.clips.append(path)
        return f"{p.clips} mp4 clips {p.frames}x{p.size}x{p.size} in {folder}", None

    def encode_decode(self, key: str, model: str | None) -> None:
        tag = "shipped" if model is None else model.replace(":", "-")
        lat, rec = self.work / f"latents-{tag}", self.work / f"recon-{tag}"
        model_args = [] if model is None else ["--model", model]
        random_note = "" if model is None else "; RANDOM weights: pipeline and speed check only"
        name = "shipped model (default --model)" if model is None else f"--model {model}"

        def encode() -> tuple[str, float | None]:
            if not self.clips:
                raise StepFailed("no clips (a0 failed)")
            p = self.cli(f"{key}-encode", "encode", self.work / "clips", "-o", lat, *model_args,
                         "--device", self.device, "--quiet")
            n = len(list(lat.rglob("*.safetensors")))
            if n != len(self.clips):
                raise StepFailed(f"{n} latent files for {len(self.clips)} clips")
            if model is None:
                self.latents_dir = lat
            return f"{n} latent files, dtype auto ({'bf16' if self.cuda else 'fp32'}){random_note}", p.peak_gib

        def decode() -> tuple[str, float | None]:
            if not any(lat.rglob("*.safetensors")):
                raise StepFailed("no latents (the encode step failed)")
            p = self.cli(f"{key}-decode", "decode", lat, "-o", rec, "--device", self.device, "--quiet")
            value = mean_psnr(self.clips, rec, ".mp4")
            return f"{len(self.clips)} mp4s, mean PSNR {value:.2f} dB vs the sources{random_note}", p.peak_gib

        self.step(f"{key}.enc", f"pvvae encode, {name}", encode)
        self.step(f"{key}.dec", f"pvvae decode, {name}", decode)

    # ---- (b) training through the CLI
    def train_args(self, out: Path, stage: str, frames: int | None = None) -> list[object]:
        p = self.plan
        cmd: list[object] = ["finetune-decoder"] if stage == "decoder" else ["train", "--stage", stage]
        if stage != "image":
            cmd += ["--frames", frames or p.train_frames]
        return [*cmd, "--init", self.shipped, "--data", "synthetic:mix", "--steps", 2, "--size", p.train_size,
                "--batch-size", p.train_batch, "--precision", self.precision, "--device", self.device,
                "--workers", p.workers, "--val-clips", 1, "--val-every", 1000, "--ckpt-every", 1000,
                "--log-every", 1, "--out", out, "--quiet"]

    def train_step(self, key: str, stage: str, extra: list[object] = (), cap: float | None = None,
                   capped_ok: bool = False) -> tuple[str, float | None, str] | tuple[str, float | None]:
        out = self.work / "train" / key
        argv = [str(a) for a in [*self.train_args(out, stage), *extra]]
        p = self.run(key, [sys.executable, "-c", LAUNCHER, *argv], cap or self.plan.train_cap, ["pvvae", *argv])
        if p.timed_out and capped_ok:
            return (f"capped at {p.cap:.0f} s: a cold inductor compile on the CPU (C++ kernels) takes ~2 min on 2 "
                    f"cores, so CPU mode stops it here (not a failure on the CPU; on CUDA it must finish); "
                    f"{self.prec_note}", None, "capped")
        check(p, key)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["kind"] == "train"]
        if not train or not all(math.isfinite(r.get("loss", r.get("d_loss", math.nan))) for r in train):
            raise StepFailed(f"no finite training loss in {out / 'metrics.jsonl'}")
        sps = ", ".join(f"{r['sec_per_step']:.3f}" for r in train)
        mem = [r["max_mem_gb"] for r in train if "max_mem_gb" in r]
        runtime = next((r for r in records if r["kind"] == "runtime"), {})
        p_ = self.plan
        shape = "1" if stage == "image" else str(p_.train_frames)
        return (f"{len(train)} steps, s/step {sps} (step 0 includes warm-up); {self.prec_note}, batch "
                f"{p_.train_batch} x {shape}x{p_.train_size}x{p_.train_size}; runtime dtype "
                f"{runtime.get('dtype', '?')}, tf32 {runtime.get('tf32', '?')}"), (max(mem) if mem else None)

    def estimate(self) -> tuple[str, None]:
        p = self.cli("b6-estimate", "train", "--preset", "base", "--data", "synthetic:mix", "--estimate-memory",
                     "--grad-checkpoint", "--device", self.device, "--precision", self.precision)
        saved = re.search(r"saved activations\s+([\d.]+) GiB", p.output)
        total = re.search(r"total\s+([\d.]+) GiB", p.output)
        head = next((line for line in p.output.splitlines() if line.startswith("base:")), "")
        if not saved or not total:
            raise StepFailed(f"no memory table in the output: {tail(p.output)}")
        return (f"saved activations {saved.group(1)} GiB, total {total.group(1)} GiB ({head.strip()}; fake tensors, "
                "nothing allocated)"), None

    def resume_probe(self) -> tuple[str, float | None]:
        """The audit's X4 (EMA shadows restored on the CPU) and X5 (device-bound generator state): a run made on
        the CPU, resumed on the device for one more step."""
        out = self.work / "train" / "b7-resume"
        self.cli("b7-cpu-part", "train", "--stage", "video", "--preset", "tiny", "--data", "synthetic:mix",
                 "--steps", 1, "--frames", 5, "--size", 32, "--batch-size", 1, "--device", "cpu",
                 "--precision", "fp32", "--workers", 0, "--val-clips", 1, "--val-every", 1000, "--ckpt-every", 1,
                 "--ema-decay", 0.9, "--log-every", 1, "--out", out, "--quiet")
        p = self.cli("b7-resume", "train", "--resume", out, "--steps", 2, "--device", self.device, "--quiet")
        warned = "saved on another kind of device" in p.output
        if self.cuda and not warned:
            raise StepFailed("resumed, but without the expected warning about the reseeded generator")
        what = ("reseed warning seen" if warned else "no device change: the same-device path only") + \
            "; fp32 (a resumed run keeps its precision)"
        return f"CPU checkpoint (EMA on) resumed on {self.device} for 1 step: ok; {what}", p.peak_gib

    # ---- (c) DDP
    def ddp(self) -> tuple[str, float | None]:
        out = self.work / "train" / "c1-ddp"
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "pvvae_cli", *[str(a) for a in self.train_args(out, "image")]]
        argv[argv.index("--device") + 1] = "cuda"  # under torchrun: one GPU per process
        p = self.run("c1-ddp", argv, self.plan.train_cap, ["torchrun", *argv[3:]])
        check(p, "c1-ddp")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        final = [r for r in records if r["kind"] == "final"]
        hashes = final[0]["rank_weight_hashes"] if final else []
        if len(hashes) != 2 or hashes[0] != hashes[1]:
            raise StepFailed(f"replicas differ after training: rank weight hashes {hashes}")
        mem = [r["max_mem_gb"] for r in records if r["kind"] == "train" and "max_mem_gb" in r]
        return ("image stage (the audit's X2 case), 2 steps, nccl, shipped model: both replicas hold the same "
                "weights"), (max(mem) if mem else None)

    # ---- (d) gen
    def gen_train(self) -> tuple[str, float | None]:
        if self.latents_dir is None:
            raise StepFailed("no latents (a1.enc failed)")
        out = self.work / "gen-run"
        self.cli("d1-gen-train", "gen", "train", self.latents_dir, "--out", out, "--preset", self.plan.gen_preset,
                 "--steps", 20, "--batch-size", self.plan.gen_batch, "--precision", self.precision,
                 "--device", self.device, "--log-every", 5, "--ckpt-every", 1000, "--quiet")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["kind"] == "train"]
        mem = [r["max_mem_gb"] for r in train if "max_mem_gb" in r]
        return (f"preset {self.plan.gen_preset}, 20 steps on {len(self.clips)} latents, {self.prec_note}: "
                f"loss {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}, "
                f"last s/step {train[-1]['sec_per_step']:.3f}"), (max(mem) if mem else None)

    def gen_sample(self) -> tuple[str, float | None]:
        run, out = self.work / "gen-run", self.work / "gen-samples"
        if not (run / "weights").is_dir():
            raise StepFailed("no gen weights (d1 failed)")
        prec = [] if self.cuda else ["--precision", "fp32"]
        p = self.cli("d2-gen-sample", "gen", "sample", run, "-o", out, "--num", 4, "--steps", 10,
                     "--device", self.device, *prec)
        videos = sorted(out.glob("*.mp4"))
        if len(videos) != 4 or not (out / "contact_sheet.png").is_file():
            raise StepFailed(f"expected 4 mp4s and contact_sheet.png in {out}, got {[v.name for v in videos]}")
        return (f"4 samples, 10 Euler steps, decoded to mp4 + contact sheet (precision "
                f"{'auto (bf16)' if self.cuda else 'fp32'})"), p.peak_gib

    # ---- (e) parity
    def parity_leg(self, key: str, device: str, dtype: str, inputs: list[Path], extra: list[object] = ()
                   ) -> tuple[Path, Path, float | None]:
        lat, rec = self.work / "parity" / key / "latents", self.work / "parity" / key / "recon"
        p1 = self.cli(f"{key}-encode", "encode", *inputs, "-o", lat, "--device", device, "--dtype", dtype, *extra,
                      "--quiet")
        p2 = self.cli(f"{key}-decode", "decode", lat, "-o", rec, "--device", device, "--dtype", dtype,
                      "--format", "png", "--quiet")
        peaks = [v for v in (p1.peak_gib, p2.peak_gib) if v is not None]
        return lat, rec, (max(peaks) if peaks else None)

    def parity(self) -> None:
        """The reference leg first; every other leg is compared with it (latents as stored: normalised)."""
        from pvvae_cli.codec.latents import load_latent

        if not self.clips:
            self.skip("e", "parity", "no clips (a0 failed)")
            return
        clip = self.clips[0]
        ref: dict = {}

        def leg(key: str, device: str, dtype: str, what: str, inputs: list[Path], extra: list[object] = (),
                limits: tuple[float, float] | None = None) -> None:
            def fn() -> tuple[str, float | None]:
                lat, rec, peak = self.parity_leg(key, device, dtype, inputs, extra)
                z = load_latent(lat / f"{clip.stem}.safetensors")[0]
                value = psnr(read_frames(clip), read_frames(rec / clip.stem))
                if limits is None:
                    ref.update(z=z, psnr=value)
                    return f"reference: PSNR {value:.2f} dB vs the source", peak
                if not ref:
                    raise StepFailed("no reference leg to compare with")
                dz = (z - ref["z"]).abs().max().item()
                dp = value - ref["psnr"]
                text = f"max abs dz {dz:.2e}, PSNR {value:.2f} dB (d {dp:+.3f} dB) vs e1"
                if dz > limits[0] or abs(dp) > limits[1]:
                    raise StepFailed(f"{text}; beyond the limits max abs dz <= {limits[0]:g}, |dPSNR| <= {limits[1]:g}")
                return f"{text} (limits {limits[0]:g}, {limits[1]:g} dB)", peak

            self.step(key, f"parity: encode+decode {clip.name} on {device} in {dtype}, {what}", fn)

        leg("e1", "cpu", "fp32", "chunk 1, batch 1 (CLI defaults)", [clip])
        if self.cuda:
            leg("e2", self.device, "fp32", "TF32 in cuDNN convs (torch default; encode/decode have no --strict-fp32)",
                [clip], limits=(0.05, 0.1))
            leg("e3", self.device, "bf16", "bf16", [clip], limits=(0.5, 0.5))
        else:
            # CPU mode: the same precision through another code path (streamed chunks of 2 latent frames, two
            # copies of the clip stacked into one batch), so the comparison still runs
            copy = self.work / "parity" / "twin" / f"{clip.stem}_copy{clip.suffix}"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, copy)
            leg("e2", "cpu", "fp32", "--chunk 2 --batch-size 2 (two copies stacked) vs chunk 1 batch 1",
                [clip, copy], ["--chunk", 2, "--batch-size", 2], limits=(1e-3, 0.05))

    # ---- (f) throughput
    def throughput(self) -> None:
        p = self.plan
        models = [("PV-VAE shipped (pvvae-small)", str(self.shipped)),
                  (f"PV-VAE preset:{p.heavy} (random)", f"preset:{p.heavy}"),
                  ("diffusers AutoencoderKLWan (Wan2.1 default config, random)", "diffusers:wan2.1")]
        dtype = "bf16" if self.cuda else "fp32"
        for i, (label, spec) in enumerate(models):
            left = len(models) - i
            per_dir = min(self.args.bench_cap or p.bench_cap, max(3.0, (self.remaining() - 25 * left) / (2 * left)))
            spec_json = dict(spec=spec, device=self.device, dtype=dtype, frames=p.bench_frames, size=p.bench_size,
                             batch=p.bench_batch, warmup=p.warmup, timed=p.timed, cap=per_dir)

            def fn(label=label, spec_json=spec_json, i=i) -> tuple[str, float | None]:
                argv = [sys.executable, str(Path(__file__).resolve()), "--bench-worker", json.dumps(spec_json)]
                proc = self.run(f"f{i + 1}-bench", argv, 2 * spec_json["cap"] + 120.0)
                if proc.rc == 3 and "diffusers is not installed" in proc.output:
                    return tail(proc.output, 1), None, "skipped"
                check(proc, f"f{i + 1}-bench")
                # the last JSON line: library warnings may share the merged output
                res = json.loads(next(ln for ln in reversed(proc.output.splitlines()) if ln.startswith("{")))
                parts, peaks = [], []
                for direction in ("encode", "decode"):
                    r = res[direction]
                    self.bench.append(dict(model=label, direction=direction, dtype=dtype, **r))
                    parts.append(f"{direction} {r['mean_s']:.4f} s/it ({r['warmup_run']}/{p.warmup} warm-up, "
                                 f"{r['timed_run']}/{p.timed} timed)")
                    if r.get("peak_gib") is not None:
                        peaks.append(r["peak_gib"])
                return "; ".join(parts), (max(peaks) if peaks else None)

            self.step(f"f{i + 1}", f"throughput {label}, {p.bench_frames}x{p.bench_size}x{p.bench_size} batch "
                      f"{p.bench_batch} {dtype}, cap {per_dir:.0f} s per direction", fn)

    # ---- the whole run
    def main(self) -> int:
        p = self.plan
        header(self)
        self.step("a0", "write synthetic clips", self.write_clips)
        self.encode_decode("a1", None)
        self.encode_decode("a2", f"preset:{p.heavy}")
        shape = f"{p.train_frames}x{p.train_size}x{p.train_size}"
        self.step("b1", "train --stage image, shipped init, 2 steps", lambda: self.train_step("b1", "image"))
        self.step("b2", f"train --stage video, shipped init, 2 steps, {shape}", lambda: self.train_step("b2", "video"))
        self.step("b3", "finetune-decoder (GAN on), shipped init, 2 steps", lambda: self.train_step("b3", "decoder"))
        self.step("b4", "train --stage video --grad-checkpoint", lambda: self.train_step(
            "b4", "video", ["--grad-checkpoint"]))
        cache = inductor_cache()
        used = cache.is_dir() and any(cache.iterdir())
        self.step("b5", f"train --stage video --compile --max-drop-ratio 0 (one graph); inductor cache {cache} "
                  f"{'held entries before (warm only for graphs compiled before)' if used else 'empty (cold)'}",
                  lambda: self.train_step("b5", "video", ["--compile", "--max-drop-ratio", 0], p.compile_cap,
                                          capped_ok=not self.cuda))
        self.step("b6", f"train --preset base --estimate-memory --grad-checkpoint (batch 4, 17x256x256, "
                  f"{self.prec_note})", self.estimate)
        self.step("b7", "resume a CPU-made checkpoint (EMA on) on the device (audit X4/X5)", self.resume_probe)
        gpus = gpu_count()
        if self.cuda and gpus >= 2:
            self.step("c1", "torchrun 2-rank nccl DDP, train --stage image", self.ddp)
        else:
            self.skip("c1", "torchrun 2-rank nccl DDP", f"skipped ({gpus} GPU)" if self.cuda else
                      "skipped (CPU mode: nccl needs 2 GPUs; gloo DDP is tests/test_train_ddp.py's)")
        self.step("d1", f"gen train, preset {p.gen_preset}, 20 steps", self.gen_train)
        self.step("d2", "gen sample --num 4 --steps 10", self.gen_sample)
        self.parity()
        self.throughput()
        return report(self)


def check(p: Proc, name: str) -> None:
    if p.timed_out:
        why = "what was left of --budget" if p.budget_cut else "its cap"
        raise StepFailed(f"timed out: killed at {why}, {p.cap:.0f} s (log: logs/{name}.log)")
    if p.rc != 0:
        raise StepFailed(f"exit code {p.rc}: {tail(p.output)} (log: logs/{name}.log)")


def tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-600:]


def inductor_cache() -> Path:
    """Where torch.compile keeps compiled kernels (torch's default unless $TORCHINDUCTOR_CACHE_DIR)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())
    return Path(tempfile.gettempdir()) / f"torchinductor_{user}"


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def header(s: Smoke) -> None:
    import torch

    p = s.plan
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    gpu = (f"{torch.cuda.get_device_name(0)} x{gpu_count()}, CUDA {torch.version.cuda}" if s.cuda else "none used")
    try:
        import diffusers

        diff = diffusers.__version__
    except Exception:  # noqa: BLE001 - any import problem: reported in step f
        diff = "not importable"
    print(f"pvvae GPU smoke: device {s.device}, mode {'quick' if s.args.quick else 'full'}, budget "
          f"{s.args.budget:.0f} s, work folder {s.work}")
    print(f"torch {torch.__version__}, GPU: {gpu}; CPU: {cpu}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; diffusers {diff}")
    print(f"clips {p.clips} x {p.frames}x{p.size}x{p.size}; training batch {p.train_batch} x "
          f"{p.train_frames}x{p.train_size}x{p.train_size}, 2 steps; throughput batch {p.bench_batch} x "
          f"{p.bench_frames}x{p.bench_size}x{p.bench_size}, {p.warmup} warm-up + {p.timed} timed; precision "
          f"{s.prec_note}")
    if not s.cuda and not s.args.quick:
        print("note: --device cpu without --quick runs the full sizes on the CPU: expect steps to reach their caps")
    print("CLI commands run as `python -c LAUNCHER ARGS`: the console script's main() plus an exit hook for the "
          "peak GPU memory." + ("" if s.cuda else " CPU mode: child processes get OMP_NUM_THREADS="
                                f"{os.environ.get('OMP_NUM_THREADS', '1')}."), flush=True)


def report(s: Smoke) -> int:
    print("\n| step | what | s | peak GPU mem GiB | result |\n|---|---|---|---|---|")
    for r in s.rows:
        peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "-"
        result = r.result.replace("|", "/")
        print(f"| {r.key} | {r.what} | {r.seconds:.1f} | {peak} | {r.status}: {result} |")
    if s.bench:
        print(f"\nthroughput ({s.device}; mean of the timed iterations, each between torch.cuda.synchronize calls on "
              "CUDA; wall time)")
        print("| model | direction | dtype | warm-up run | timed run | s/it | clips/s | peak GiB |\n"
              "|---|---|---|---|---|---|---|---|")
        for b in s.bench:
            peak = f"{b['peak_gib']:.2f}" if b.get("peak_gib") is not None else "-"
            print(f"| {b['model']} | {b['direction']} | {b['dtype']} | {b['warmup_run']} | {b['timed_run']} | "
                  f"{b['mean_s']:.4f} | {b['batch'] / b['mean_s']:.2f} | {peak} |")
    failed = [r.key for r in s.rows if r.status == "FAIL"]
    capped = [r.key for r in s.rows if r.status == "capped"]
    total = s.args.budget - s.remaining()
    summary = f"{len(s.rows)} steps in {total:.0f} s: {len(failed)} failed"
    summary += f" ({', '.join(failed)})" if failed else ""
    summary += f"; capped (not failures on the CPU): {', '.join(capped)}" if capped else ""
    print(f"\n{summary}")
    if s.args.out is None:
        if failed:
            print(f"logs kept in {s.work / 'logs'}")
        else:
            shutil.rmtree(s.work, ignore_errors=True)
    else:
        print(f"outputs and logs in {s.work}")
    return 1 if failed else 0


# ---- the throughput worker (its own process: its own peak memory, a hard cap from the parent)
def bench_worker(spec: dict) -> None:
    import torch

    from pvvae_cli.runtime.device import DTYPES, autocast

    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    torch.manual_seed(0)
    if spec["spec"].startswith("diffusers:"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        try:
            import diffusers  # noqa: F401
            from bench_wan import import_wan
        except ImportError as e:
            print(f"diffusers is not installed ({e}): no AutoencoderKLWan row; pip install -e '.[bench]'")
            sys.exit(3)
        model = import_wan()().to(device).eval()  # the default config is Wan2.1's
        enc = lambda v: model.encode(v).latent_dist.mode()  # noqa: E731
        dec = lambda z: model.decode(z).sample  # noqa: E731
    else:
        from pvvae_cli.models.registry import load_model

        model = load_model(spec["spec"], device=device)
        enc = lambda v: model.encode(v).mode()  # noqa: E731  (the protocol's one-pass encode and decode)
        dec = model.decode
    x = torch.rand(spec["batch"], 3, spec["frames"], spec["size"], spec["size"], device=device) * 2 - 1
    out = {}
    with torch.no_grad(), autocast(device, dtype):
        z = enc(x)  # the latents decode is timed on (one more, untimed encode)
        for direction, fn in (("encode", lambda: enc(x)), ("decode", lambda: dec(z))):
            out[direction] = timed_protocol(fn, device, spec["warmup"], spec["timed"], spec["cap"])
            out[direction]["batch"] = spec["batch"]
    print(json.dumps(out))


def timed_protocol(fn: Callable[[], object], device, warmup: int, timed: int, cap: float) -> dict:
    """Up to ``warmup`` untimed iterations (within a quarter of ``cap``), then the mean of up to ``timed`` iterations
    (until ``cap``), each between synchronisations; at least one of each. Counts actually run are returned."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    w = 0
    while w < warmup and (w == 0 or time.perf_counter() - start < cap / 4):
        fn()
        sync()
        w += 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    while len(times) < timed and (not times or time.perf_counter() - start < cap):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"warmup_run": w, "timed_run": len(times), "mean_s": sum(times) / len(times), "peak_gib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes (the CPU check: about 3 minutes on 2 cores)")
    ap.add_argument("--out", help="keep everything in this folder (default: a temporary folder)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    ap.add_argument("--bench-cap", type=float, default=None,
                    help="seconds per model and direction in (f) (default 30; quick 8); 300 runs the full protocol")
    ap.add_argument("--bench-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.dont_write_bytecode = True  # see Smoke.run
    if args.bench_worker:
        bench_worker(json.loads(args.bench_worker))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("CUDA is not available here: run `bash benchmarks/gpu_smoke.sh --device cpu --quick`")
    if args.out and Path(args.out).resolve().is_relative_to(REPO):
        print(f"note: --out {args.out} is inside the repository", file=sys.stderr)
    sys.exit(Smoke(args).main())


if __name__ == "__main__":
    main()
