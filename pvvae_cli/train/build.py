"""What a run trains: the model it starts from, which of its parameters learn, and the optimisers.

The values here (AdamW betas, weight-decay groups, the discriminator's optimiser) are the training recipe;
the README's Training section documents them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pvvae_cli.engine.checkpoints import CONFIG_FILE, WEIGHTS_DIR, TrainError
from pvvae_cli.engine.optim import adamw, warmup_cosine
from pvvae_cli.train.config import ConfigError, TrainConfig


def resolve_init(spec: str) -> str:
    """``--init`` accepts a weights folder, a hub repo id, or a run folder (its exported ``weights/``)."""
    path = Path(spec).expanduser()
    if (path / CONFIG_FILE).is_file() and not (path / "config.json").is_file():
        if not (path / WEIGHTS_DIR / "config.json").is_file():
            raise TrainError(f"{path}: a run folder without exported weights (the run has not finished); "
                             f"finish it with --resume {path}, or pass a weights folder")
        return str(path / WEIGHTS_DIR)
    return spec


def build_vae(cfg: TrainConfig):
    """The model a run starts from: ``--init`` weights of any family that implements
    ``protocol.TrainableAutoencoder`` (a pvvae weights folder, a diffusers Wan VAE folder or Wan ``.pth``, a hub
    id), or a ``--preset`` with random weights; with the padding mode of the run (``--padding``; the decoder stage
    keeps the model's, it is frozen there)."""
    from pvvae_cli.models.protocol import TrainableAutoencoder
    from pvvae_cli.models.registry import build_model, load_model

    if cfg.init is not None:
        vae = load_model(resolve_init(cfg.init))
        if not isinstance(vae, TrainableAutoencoder):
            raise TrainError(f"{cfg.init}: a {type(vae).__name__} cannot be trained here (it lacks what "
                             "models.protocol.TrainableAutoencoder declares)")
    else:
        vae = build_model(preset_config(cfg))
    if cfg.stage != "decoder" and vae.config.padding_mode != cfg.padding:
        # Rebuild with the requested padding; every other tensor carries over (a new token starts at zero).
        state = {k: v for k, v in vae.state_dict().items() if k != "padding_token"}
        vae_new = type(vae)(vae.config.replace(padding_mode=cfg.padding))
        missing, unexpected = vae_new.load_state_dict(state, strict=False)
        assert set(missing) <= {"padding_token"} and not unexpected, (missing, unexpected)
        vae = vae_new
    return vae.train()


def preset_config(cfg: TrainConfig):
    """The architecture a ``--preset`` run builds: the preset's config with ``--shortcut-pca`` / ``--refiner``."""
    from pvvae_cli.models.registry import get_preset

    preset = get_preset(cfg.preset)
    changes = ({"linear_shortcut": True} if cfg.shortcut_pca else {}) | (
        {"refiner_channels": cfg.refiner} if cfg.refiner else {})
    if changes and not hasattr(preset, "refiner_channels"):
        raise ConfigError(f"--shortcut-pca and --refiner are PV-VAE options; preset {cfg.preset!r} is not one")
    return preset.replace(**changes) if changes else preset


def fit_shortcut(vae, dataset, clips: int) -> None:
    """Set the model's linear shortcut to the block PCA of the first ``clips`` training clips (``--shortcut-pca``):
    with its network outputs still at zero, the model then starts as that PCA codec."""
    from pvvae_cli.eval.baselines import BlockPCA

    def clip(i: int):  # file datasets give (pixels, skipped files), synthetic ones the pixels
        item = dataset[i]
        return item[0] if isinstance(item, tuple) else item

    cfg = vae.config
    pca = BlockPCA.fit((clip(i) for i in range(clips)), cfg.temporal_compression, cfg.spatial_compression,
                       cfg.latent_channels)
    vae.init_shortcut_from_pca(pca)


def trainable_parameters(vae, stage: str, freeze_shortcut: bool = False) -> list[nn.Parameter]:
    """The parameters the stage trains. Stage 3 (decoder) freezes the encoder and the padding token, and
    ``freeze_shortcut`` the model's linear block shortcut; frozen parameters are left out of the optimiser, so they
    stay bit-identical."""
    if freeze_shortcut:
        shortcut = list(getattr(vae, "shortcut_parameters", lambda: ())())
        if not shortcut:
            raise ConfigError("--freeze-shortcut: this model has no linear block shortcut (train one with --preset "
                              "NAME --shortcut-pca N)")
        for p in shortcut:
            p.requires_grad_(False)
    if stage == "decoder":
        for p in vae.encoder_parameters():
            p.requires_grad_(False)
        if vae.padding_token is not None:
            vae.padding_token.requires_grad_(False)
    return [p for p in vae.parameters() if p.requires_grad]


def build_optimizer(cfg: TrainConfig, trainable: list[nn.Parameter]):
    """AdamW over ``trainable`` and its schedule (warm-up, then cosine to ``min_lr_ratio`` of the peak)."""
    opt = adamw(trainable, cfg.lr, cfg.weight_decay)  # norms, biases, padding token: no weight decay
    return opt, warmup_cosine(opt, cfg.warmup, cfg.steps, cfg.min_lr_ratio)


def build_disc_optimizer(cfg: TrainConfig, disc: nn.Module) -> torch.optim.Optimizer:
    """The discriminator's AdamW (GAN-style betas, no weight decay)."""
    return adamw(disc.parameters(), cfg.disc_lr or cfg.lr, 0.0, betas=(0.5, 0.9), decay_all=True)


def enable_grad_checkpointing(model) -> None:
    """``--grad-checkpoint``: the model recomputes each block's activations in backward instead of keeping them
    (``TrainableAutoencoder.set_grad_checkpointing``); a ``ConfigError`` for a model that cannot."""
    if not hasattr(model, "set_grad_checkpointing"):
        raise ConfigError(f"--grad-checkpoint: a {type(model).__name__} does not support activation checkpointing")
    model.set_grad_checkpointing(True)


def estimate_memory(cfg: TrainConfig) -> str:
    """``--estimate-memory``: the device memory one training step of ``cfg`` needs (``runtime.memory``), as a
    short table. The model is described, not built: a preset's config, or the config of ``--init`` weights. A named
    device need not be present (plan a CUDA run on a laptop with ``--device cuda``): ``--precision auto`` means bf16
    there."""
    from pvvae_cli.models.registry import load_model
    from pvvae_cli.runtime.device import DTYPES, resolve_device, resolve_training_dtype
    from pvvae_cli.runtime.memory import GIB, estimate_training_memory

    try:  # a named device need not be here (plan a GPU run anywhere); auto is what a run here would use
        device = resolve_device("auto") if cfg.device == "auto" else torch.device(cfg.device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"unknown device {cfg.device!r}: use auto, cpu, cuda or cuda:N") from e
    if cfg.precision != "auto":
        dtype = DTYPES[cfg.precision]
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else resolve_training_dtype("auto", device)
    if cfg.init is not None:
        model = load_model(resolve_init(cfg.init))  # only its config is used
    else:
        model = preset_config(cfg)
    est = estimate_training_memory(model, cfg.batch_size, cfg.frames, cfg.size, cfg.size, dtype,
                                   grad_checkpoint=cfg.grad_checkpoint, stage=cfg.stage, ema=cfg.ema_decay > 0,
                                   loss_weights=cfg.loss_weights)
    lines = [f"memory of one training step per process on {device.type}", est.format()]
    if cfg.loss_weights["perceptual"] > 0 or cfg.gan_weight > 0:
        lines.append("  (the discriminator and a perceptual network add their parameters and activations on top)")
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory
        verdict = "fits" if est.total_bytes < 0.9 * total else "does NOT fit"
        lines.append(f"  this GPU: {total / GIB:.1f} GiB -> {verdict} (with 10% headroom)")
    elif not cfg.grad_checkpoint:
        lines.append("  --grad-checkpoint lowers the saved activations; --batch-size with --grad-accum keeps the "
                     "effective batch")
    return "\n".join(lines)
