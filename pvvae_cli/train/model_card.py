"""The ``README.md`` written beside exported weights: how they were trained and what validation measured."""

from __future__ import annotations

from pvvae_cli.train.config import TrainConfig

STAGE_NAMES = {"image": "image pretraining (stage 1)", "video": "predictive video training (stage 2)",
               "decoder": "decoder fine-tuning (stage 3)"}


def model_card(cfg: TrainConfig, step: int, last_val: dict) -> str:
    """Markdown: the stage, data, objective and optimiser of the run, and its last validation numbers."""
    lines = [
        "# PV-VAE weights (pvvae)", "",
        f"Trained with `pvvae` ({STAGE_NAMES[cfg.stage]}) for {step} steps from "
        + (f"`{cfg.init}`" if cfg.init else f"random `{cfg.preset}` weights") + ".", "",
        f"- data: {', '.join(cfg.data)}",
        f"- clips: {cfg.frames} frames at stride {cfg.frame_stride}, {cfg.size}x{cfg.size}, batch {cfg.batch_size}"
        f" x accum {cfg.grad_accum}",
        f"- objective: max drop ratio {cfg.drop_ratio}, padding {cfg.padding}, weights mse {cfg.mse_weight}, motion "
        f"{cfg.motion_weight}, perceptual {_perceptual(cfg)}, gan {cfg.gan_weight}"
        f"{' adaptive' if cfg.gan_adaptive else ''} (from step {cfg.gan_start_step}), kl {cfg.kl_weight}",
        f"- optimiser: AdamW lr {cfg.lr}, warm-up {cfg.warmup}, cosine to x{cfg.min_lr_ratio}, precision "
        f"{cfg.precision}, EMA {cfg.ema_decay or 'off'}",
    ]
    if last_val:
        vals = ", ".join(f"{k} {v:.2f}" for k, v in last_val.items() if "psnr" in k or "ssim" in k)
        lines += ["", f"Validation at step {step} on {cfg.val_clips} held-out clips of the same source: {vals} "
                      "(PSNR in dB per frame on [0, 1]; measured, not a benchmark result)."]
    return "\n".join(lines) + "\n"


def _perceptual(cfg: TrainConfig) -> str:
    names = {"stlpips": "ST-LPIPS (alex)", "lpips": f"LPIPS ({cfg.lpips_net})"}
    return f"{names[cfg.perceptual]} {cfg.perceptual_weight}" if cfg.perceptual != "none" else "none"
