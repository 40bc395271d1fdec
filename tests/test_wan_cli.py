"""Wan VAE folders written by diffusers through the CLI: ``pvvae encode`` / ``decode`` (streaming and tiling),
and the fine-tune recipe (``pvvae train --init <wan folder>`` with the predictive objective, then ``pvvae eval``
before vs after)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cpu_bf16
from typer.testing import CliRunner
from wan_reference import random_reference

from pvvae_cli.cli.app import app
from pvvae_cli.codec.latents import load_latent
from pvvae_cli.media.video_io import probe
from pvvae_cli.media.writer import write_video
from pvvae_cli.models.registry import load_model
from pvvae_cli.models.wan.model import WanVAE

runner = CliRunner()


def moving(t: int, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """uint8 (t, h, w, 3): a bright square moving right over a noisy background."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 80, (1, h, w, 3), dtype=np.uint8), t, axis=0)
    for i in range(t):
        frames[i, 8:24, 2 + 3 * i : 18 + 3 * i] = 230
    return frames


@pytest.fixture(scope="module")
def wan_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    for arch in ("wan2.1", "wan2.2"):
        random_reference(arch).save_pretrained(root / arch)  # diffusers' own writer
    return root


@pytest.mark.parametrize("arch", ["wan2.1", "wan2.2"])
def test_encode_decode_a_diffusers_folder(wan_folders, tmp_path, arch):
    clip = tmp_path / "c.mp4"
    write_video(clip, moving(11), fps=8)
    folder = wan_folders / arch
    res = runner.invoke(app, ["encode", str(clip), "-o", str(tmp_path / "lat"), "--model", str(folder), "-q"])
    assert res.exit_code == 0, res.output
    z, meta = load_latent(tmp_path / "lat" / "c.safetensors")
    s = 8 if arch == "wan2.1" else 16
    assert z.shape[:2] == (load_model(folder).config.latent_channels, 4)  # 11 frames padded to 13: 1 + 3 latents
    assert (meta.num_frames, meta.height, meta.width) == (11, 40, 56) and z.shape[2] * s >= 40
    res = runner.invoke(app, ["decode", str(tmp_path / "lat"), "-o", str(tmp_path / "rec"), "-q"])
    assert res.exit_code == 0, res.output
    info = probe(tmp_path / "rec" / "c.mp4")
    assert (info.num_frames, info.height, info.width) == (11, 40, 56)


TILES = ["--tile", "on", "--tile-size", "32", "--tile-overlap", "16"]


def test_tiled_encode_decode(wan_folders, tmp_path):
    """Tiling goes through the same protocol. Tiles of 32 px see much less context than this tiny random model's
    receptive field, so tiled latents differ from one-pass ones (30-45 % measured at 64x96 for Wan2.2, 67 % for
    PV-VAE's tiny preset): checked for shape and sanity."""
    clip = tmp_path / "c.mp4"
    write_video(clip, moving(5, h=48, w=64), fps=8)
    folder = str(wan_folders / "wan2.2")
    latents = {}
    for name, extra in (("ref", ["--tile", "off"]), ("tiled", TILES)):
        res = runner.invoke(app, ["encode", str(clip), "-o", str(tmp_path / name), "--model", folder, "-q", *extra])
        assert res.exit_code == 0, res.output
        latents[name] = load_latent(tmp_path / name / "c.safetensors")[0].float()
    ref, tiled = latents["ref"], latents["tiled"]
    assert ref.shape == tiled.shape == (6, 2, 3, 4)
    assert torch.isfinite(tiled).all() and (tiled - ref).abs().mean() / ref.abs().mean() < 0.6
    res = runner.invoke(app, ["decode", str(tmp_path / "tiled"), "-o", str(tmp_path / "rec"), "-q", *TILES])
    assert res.exit_code == 0, res.output
    info = probe(tmp_path / "rec" / "c.mp4")
    assert (info.num_frames, info.height, info.width) == (5, 48, 64)


@requires_cpu_bf16
def test_bf16_encode_decode(wan_folders, tmp_path):
    """bf16 goes through the same protocol: its latents stay within 3 % (mean relative) of fp32 ones, and a tiled
    bf16 decode restores the clip's shape."""
    clip = tmp_path / "c.mp4"
    write_video(clip, moving(5, h=48, w=64), fps=8)
    folder = str(wan_folders / "wan2.2")
    latents = {}
    for name, extra in (("ref", []), ("bf16", ["--dtype", "bf16"])):
        res = runner.invoke(app, ["encode", str(clip), "-o", str(tmp_path / name), "--model", folder, "-q",
                                  "--tile", "off", *extra])
        assert res.exit_code == 0, res.output
        latents[name] = load_latent(tmp_path / name / "c.safetensors")[0].float()
    ref, bf16 = latents["ref"], latents["bf16"]
    assert ref.shape == bf16.shape == (6, 2, 3, 4)
    assert (bf16 - ref).abs().mean() / ref.abs().mean() < 0.03
    res = runner.invoke(app, ["decode", str(tmp_path / "bf16"), "-o", str(tmp_path / "rec"), "-q", *TILES,
                              "--dtype", "bf16"])
    assert res.exit_code == 0, res.output
    info = probe(tmp_path / "rec" / "c.mp4")
    assert (info.num_frames, info.height, info.width) == (5, 48, 64)


def test_finetune_recipe_on_a_tiny_wan(wan_folders, tmp_path, offline):
    folder = wan_folders / "wan2.1"
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--init", str(folder), "--data", "synthetic:shapes", "--frames", "9",
                              "--size", "32", "--batch-size", "1", "--steps", "3", "--out", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    tuned = load_model(run / "weights")
    before = load_model(folder)
    assert isinstance(tuned, WanVAE) and tuned.config.padding_mode == "learnable"
    assert tuned.padding_token is not None
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    clips = tmp_path / "clips"
    for i in range(2):
        write_video(clips / f"c{i}.mp4", moving(9, seed=i), fps=8)
    res = runner.invoke(app, ["eval", str(clips), "-m", str(folder), "-m", str(run / "weights"), "--frames", "9",
                              "--size", "32", "--predict-context", "5"])
    assert res.exit_code == 0, res.output
    assert f"| metric | {folder} | {run / 'weights'} |" in res.output
