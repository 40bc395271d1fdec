"""The results of ``pvvae eval``: per model metrics and per-video rows, as a markdown table (models side by side),
JSON (every number and the protocol) and a per-video CSV. Every file is written atomically."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pvvae_cli import __version__
from pvvae_cli.runtime.atomic import atomic_path

METRIC_ROWS = [  # key, label (arrow: which way is better), number format
    ("psnr", "PSNR (dB) ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("stlpips", "ST-LPIPS (alex) ↓", "{:.4f}"),  # shift-tolerant LPIPS: never reported under the name LPIPS
    ("lpips", "LPIPS ↓", "{:.4f}"),
    ("rfvd", "rFVD ↓", "{:.2f}"),
    ("pred_psnr", "prediction PSNR (dB) ↑", "{:.2f}"),
    ("pred_ssim", "prediction SSIM ↑", "{:.4f}"),
    ("copy_psnr", "copy-last-frame PSNR (dB)", "{:.2f}"),
    ("copy_ssim", "copy-last-frame SSIM", "{:.4f}"),
    ("it_s", "speed (it/s) ↑", "{:.3f}"),
    ("peak_memory_gib", "peak memory (GiB)", "{:.2f}"),
]
PER_VIDEO_KEYS = ["psnr", "ssim", "stlpips", "lpips", "pred_psnr", "pred_ssim", "copy_psnr", "copy_ssim"]


@dataclass
class ModelResult:
    """One model's column: ``metrics`` (means over clips), ``unavailable`` (metric -> reason), ``per_video`` rows."""

    name: str
    spec: str
    tag: str
    parameters: int
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason
    per_video: list[dict] = field(default_factory=list)
    speed: dict | None = None


@dataclass
class EvalReport:
    """Everything one evaluation measured: the protocol (with the metric implementations), the clips used and
    skipped, and one ``ModelResult`` per model."""

    protocol: dict
    implementations: dict[str, str]
    videos: list[str]
    skipped: list[str]
    models: list[ModelResult]

    def to_dict(self) -> dict:
        return {"pvvae_version": __version__, "protocol": self.protocol | {"metric_implementations":
                self.implementations}, "num_videos": len(self.videos), "videos": self.videos,
                "skipped": self.skipped, "models": [asdict(m) for m in self.models]}

    def to_markdown(self) -> str:
        names = [m.name for m in self.models]
        lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        notes: dict[str, int] = {}
        for key, label, fmt in METRIC_ROWS:
            if not any(key in m.metrics or key in m.unavailable for m in self.models):
                continue
            if key == "it_s" and self.models[0].speed:
                s = self.models[0].speed
                label = f"speed (it/s, {s['frames']}×{s['size']}², batch {s['batch']}) ↑"
            if key == "peak_memory_gib" and self.models[0].speed:
                cuda = self.models[0].speed["device"].startswith("cuda")
                label = "peak memory (GiB, CUDA)" if cuda else "process peak RSS (GiB, CPU, whole process)"
            if key == "rfvd":
                label = f"rFVD ({len(self.videos)} clips) ↓"  # FVD depends on the sample count: always give it
            cells = []
            for m in self.models:
                if key in m.metrics:
                    cells.append(fmt.format(m.metrics[key]))
                else:
                    reason = m.unavailable.get(key, "")
                    n = notes.setdefault(reason, len(notes) + 1)
                    cells.append(f"unavailable [{n}]")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        p = self.protocol
        lines.append("")
        clips = (f"{len(self.videos)} video(s), frames {p['start']}..{p['start'] + p['frames'] - 1}"
                 if p.get("windows", 1) == 1 else
                 f"{len(self.videos)} windows of {p['frames']} frames ({p['windows']} per video, from frame "
                 f"{p['start']} to the end)")
        desc = (f"{clips}, short side → "
                f"{p['size']} + centre crop, posterior mode, {p['device']} {p['dtype']}")
        if p.get("predict_context"):
            desc += (f"; prediction: {p['predict_context']} context + {p['frames'] - p['predict_context']} future "
                     f"frames, {p['padding']} padding")
        lines.append(f"protocol: {desc}")
        timing = p.get("network_seconds_per_clip")
        if timing:
            names = {"stlpips": "ST-LPIPS (alex)", "lpips": "LPIPS", "i3d": "I3D"}
            lines.append("metric networks, seconds per clip: " + ", ".join(
                f"{names.get(k, k)} {v:.3f}" for k, v in timing.items()))
        for reason, n in notes.items():
            lines.append(f"[{n}] {reason}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s): " + "; ".join(self.skipped))
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    def per_video_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["model", "video", *PER_VIDEO_KEYS])
        for m in self.models:
            for row in m.per_video:
                writer.writerow([m.name, row["video"]] + [_csv_num(row.get(k)) for k in PER_VIDEO_KEYS])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(self.per_video_csv())


def _csv_num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON, atomically; NaN/inf are refused (no reported number may be one)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def column_names(specs: list[str]) -> list[str]:
    """Unique column names for models: each spec as given (folder, repo id or preset), repeats numbered."""
    names: list[str] = []
    for spec in specs:
        base = spec.rstrip("/") or spec
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names
