"""``StudyConfig``: every setting of the diffusability study, and its registry of sizes (``SCALES``).

Both VAEs of a seed get the same config: only ``predictive`` differs between them (``VARIANTS``). Saved beside
the study as ``study_config.json``; a rerun into the same folder must use the same config (its data and runs are
reused).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pvvae_cli.config_io import strict_from_dict
from pvvae_cli.errors import PvvaeError

# variant name -> `pvvae train --predictive/--no-predictive`; the names are folder names and result keys
VARIANTS: dict[str, bool] = {"recon": False, "predictive": True}


class StudyConfigError(PvvaeError, ValueError):
    """An invalid study setting; the message names it and the fix."""


@dataclass(frozen=True)
class StudyConfig:
    # data (pvvae_cli.study.moving_digits)
    classes: tuple[int, ...] = (0, 1, 2, 3)
    train_per_class: int = 64
    test_per_class: int = 16
    frames: int = 17
    size: int = 64
    data_seed: int = 0
    # the VAEs: `pvvae train --stage video` then `pvvae finetune-decoder`, no adversarial loss (see docs)
    vae_preset: str = "tiny"
    vae_steps: int = 400
    decoder_steps: int = 100
    vae_batch: int = 4
    # the judge: a small 3-D CNN trained on the real training clips
    classifier_steps: int = 1000
    # the latent DiT: `pvvae gen train`, class-conditional on the digit
    gen_preset: str = "tiny"
    gen_steps: int = 2000
    gen_batch: int = 32
    # lr 1e-3 and time shift 3: what made `tiny` learn on the CPU (README, "gen: does it learn?")
    gen_lr: float = 1e-3
    gen_time_shift: float = 3.0
    eval_every: int = 500
    eval_samples: int = 32  # per evaluation (classes in turn); FVD/FCD are biased at small counts: compare equal
    sample_steps: int = 25  # Euler steps per sample
    seeds: tuple[int, ...] = (0, 1, 2)
    precision: str = "auto"  # the trainers' auto: bf16 on CUDA, on the CPU the faster of fp32 and bf16 (measured)
    device: str = "auto"

    def __post_init__(self) -> None:
        for key in ("classes", "seeds"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        if len(set(self.classes)) < 2 or any(not 0 <= c <= 9 for c in self.classes):
            raise StudyConfigError(f"classes must be >= 2 distinct digits 0..9, got {self.classes}")
        if not self.seeds:
            raise StudyConfigError("seeds: give at least one seed (the study's default is 3)")
        for key in ("train_per_class", "test_per_class", "vae_steps", "decoder_steps", "vae_batch",
                    "classifier_steps", "gen_steps", "gen_batch", "eval_every", "sample_steps"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise StudyConfigError(f"{key.replace('_', '-')} must be a positive integer, got "
                                       f"{getattr(self, key)!r}")
        if self.eval_samples < 2 * len(self.classes) or self.test_per_class * len(self.classes) < 2:
            raise StudyConfigError(f"eval-samples must be >= 2 per class ({2 * len(self.classes)}) and the test "
                                   f"split >= 2 clips for the Frechet distances, got {self.eval_samples}")
        if self.frames < 9 or (self.frames - 1) % 4:
            raise StudyConfigError(f"frames must be 1 + 4k and >= 9 (the I3D needs 9, prediction needs 2 latent "
                                   f"groups), got {self.frames}")
        if self.size % 16 or self.size < 48:
            raise StudyConfigError(f"size must be a multiple of 16 and >= 48, got {self.size}")

    @property
    def num_clips(self) -> tuple[int, int]:
        return self.train_per_class * len(self.classes), self.test_per_class * len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"], d["seeds"] = list(self.classes), list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> StudyConfig:
        return strict_from_dict(cls, {str(k).replace("-", "_"): v for k, v in d.items()}, source, StudyConfigError)

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)


# Sizes. `default` is meant to finish well under 2 hours on 2 CPU cores (docs/diffusability.md has the timing);
# `smoke` is a pipeline check of a minute or two (tests use it, shrunk further); `large` is for a GPU or a night.
SCALES: dict[str, StudyConfig] = {
    "smoke": StudyConfig(classes=(0, 1), train_per_class=4, test_per_class=4, frames=9, size=48, vae_steps=4,
                         decoder_steps=2, vae_batch=2, classifier_steps=10, gen_steps=4, gen_batch=4, eval_every=2,
                         eval_samples=4, sample_steps=4, seeds=(0, 1)),
    "default": StudyConfig(),
    "large": StudyConfig(classes=tuple(range(10)), train_per_class=200, test_per_class=40, vae_preset="small",
                         vae_steps=5000, decoder_steps=1000, vae_batch=8, classifier_steps=2000, gen_preset="S",
                         gen_steps=20000, gen_batch=32, gen_lr=1e-4, eval_every=2000, eval_samples=256,
                         sample_steps=50, seeds=(0, 1, 2)),
}
