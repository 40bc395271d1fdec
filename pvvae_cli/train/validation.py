"""Validation during training: fixed held-out clips, reconstruction and prediction quality, a sample video.

Metric names are those of ``pvvae eval``: ``pred_psnr`` / ``pred_ssim`` score predicted frames, ``copy_psnr`` the
baseline that repeats the last observed frame; ``psnr_recon`` / ``ssim_recon`` score plain reconstructions. When
the run trains a perceptual term, ``perceptual_recon`` is that term's distance (ST-LPIPS or LPIPS, lower is better) on
the reconstructions, so the trade-off between it and PSNR is visible while the run goes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pvvae_cli.runtime.device import autocast
from pvvae_cli.train.config import TrainConfig
from pvvae_cli.train.data import make_dataset
from pvvae_cli.train.objective import kept_frames, num_groups, predictive_forward


def validation_clips(cfg: TrainConfig, temporal_compression: int) -> torch.Tensor:
    """Fixed validation clips ``(N, 3, T, S, S)`` in [-1, 1]: ``--val-data``, or the training source drawn
    with a different seed (for folders that means the same files, other windows)."""
    specs = cfg.val_data or cfg.data
    seed = cfg.seed + 7919 if not cfg.val_data else cfg.seed
    dataset = make_dataset(specs, cfg.frames, cfg.size, cfg.frame_stride, seed=seed,
                           temporal_compression=temporal_compression)
    items = [dataset[i] for i in range(cfg.val_clips)]
    return torch.stack([item if isinstance(item, torch.Tensor) else item[0] for item in items])


@torch.no_grad()
def validate(vae, clips: torch.Tensor, batch_size: int, device: torch.device, dtype: torch.dtype,
             perceptual: torch.nn.Module | None = None):
    """Reconstruction (everything observed) and prediction (first half of the groups observed) quality.

    Returns ``(metrics, sample)``: metrics has ``psnr_recon``, ``ssim_recon`` and, for clips of more than one
    group, ``pred_psnr`` / ``pred_ssim`` on the predicted frames only, ``copy_psnr`` (the baseline that repeats
    the last observed frame) and ``pred_context_frames``; with ``perceptual`` (a ``losses.PerceptualLoss``),
    ``perceptual_recon``, its mean over clips of the reconstructions; ``sample`` holds the first clips' (target, recon,
    pred) for a video."""
    from pvvae_cli.metrics.image import psnr, ssim

    was_training = vae.training
    vae.eval()
    t = clips.shape[2]
    groups = num_groups(t, vae.config.temporal_compression)
    dropped = (groups - 1) - (groups - 1) // 2
    kept = kept_frames(t, dropped, vae.config.temporal_compression)
    gen = torch.Generator(device).manual_seed(0)  # gaussian padding: the same noise at every validation
    recons, preds, distances = [], [], []
    for i in range(0, clips.shape[0], batch_size):
        x = clips[i : i + batch_size].to(device)
        with autocast(device, dtype):
            recon = predictive_forward(vae, x, 0, sample=False).recon.float().clamp(-1, 1)
            recons.append(recon.cpu())
        if perceptual is not None:  # in fp32, outside autocast: a metric, not a training term
            distances.append(float(perceptual(recon, x)) * x.shape[0])
        if dropped:
            with autocast(device, dtype):
                preds.append(predictive_forward(vae, x, dropped, sample=False, generator=gen)
                             .recon.float().clamp(-1, 1).cpu())
    vae.train(was_training)
    recon = torch.cat(recons)
    metrics = {"psnr_recon": float(psnr(recon, clips).mean()), "ssim_recon": float(ssim(recon, clips).mean())}
    if distances:
        metrics["perceptual_recon"] = sum(distances) / clips.shape[0]
    sample = {"target": clips[:2], "recon": recon[:2]}
    if dropped:
        pred = torch.cat(preds)
        future, truth = pred[:, :, kept:], clips[:, :, kept:]
        copy_last = clips[:, :, kept - 1 : kept].expand_as(truth)
        metrics.update({
            "pred_psnr": float(psnr(future, truth).mean()), "pred_ssim": float(ssim(future, truth).mean()),
            "copy_psnr": float(psnr(copy_last, truth).mean()), "pred_context_frames": kept,
        })
        sample["pred"] = pred[:2]
    return metrics, sample


def summary(metrics: dict) -> str:
    """``"val PSNR recon 24.31 dB, pred 19.02 dB (copy-last 18.40)"`` for progress messages (plus
    ``", perceptual 0.2010"`` when measured)."""
    pred = f", pred {metrics['pred_psnr']:.2f} dB (copy-last {metrics['copy_psnr']:.2f})" \
        if "pred_psnr" in metrics else ""
    dist = f", perceptual {metrics['perceptual_recon']:.4f}" if "perceptual_recon" in metrics else ""
    return f"val PSNR recon {metrics['psnr_recon']:.2f} dB{pred}{dist}"


def write_sample(path: Path, sample: dict, fps: float = 8.0) -> Path:
    """Rows = clips, columns = ground truth | reconstruction | prediction; mp4 (png for single frames)."""
    from pvvae_cli.media.video_io import tensor_to_frames
    from pvvae_cli.media.writer import write_video

    cols = [sample["target"], sample["recon"]] + ([sample["pred"]] if "pred" in sample else [])
    rows = [torch.cat([col[i] for col in cols], dim=3) for i in range(cols[0].shape[0])]
    grid = torch.cat(rows, dim=2)  # (3, T, H * n_clips, W * n_cols)
    frames = tensor_to_frames(grid)
    path = path.with_suffix(".png" if frames.shape[0] == 1 else ".mp4")
    write_video(path, frames, fps)
    return path
