"""The memory and speed options of training (``--grad-checkpoint``, ``--compile``, ``--strict-fp32``,
``--estimate-memory``), wired through the trainer and the CLI. The model-level checks of checkpointing and the
estimator's own tests are in test_grad_checkpoint.py and test_memory_estimate.py."""

from __future__ import annotations

import re

import pytest
from conftest import read_metrics, tiny_train_config
from typer.testing import CliRunner

from pvvae_cli.cli.app import app
from pvvae_cli.train.trainer import train

runner = CliRunner()


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir)]


def test_grad_checkpoint_gives_the_same_loss_curve(tmp_path, one_thread):
    plain = train(tiny_train_config(steps=3), tmp_path / "plain", quiet=True)
    ckpt = train(tiny_train_config(steps=3, grad_checkpoint=True), tmp_path / "ckpt", quiet=True)
    assert plain.status == ckpt.status == "finished"
    assert _losses(tmp_path / "ckpt") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-5)


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path, one_thread):
    """torch.compile (inductor, C++ on the CPU): 3 steps within 1e-3 of eager. No GAN: the discriminator is not
    compiled and would only add time."""
    train(tiny_train_config(steps=3, gan_weight=0.0), tmp_path / "eager", quiet=True)
    result = train(tiny_train_config(steps=3, gan_weight=0.0, compile=True), tmp_path / "compiled", quiet=True)
    assert result.status == "finished"
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-3)


def test_strict_fp32_is_recorded_and_resumable(tmp_path, one_thread):
    out = tmp_path / "run"
    train(tiny_train_config(steps=1, strict_fp32=True), out, quiet=True)
    runtime = read_metrics(out, "runtime")
    assert runtime[0]["device"] == "cpu" and "tf32" in runtime[0]
    # memory and speed options change nothing computed beyond rounding: a resumed run may switch them
    result = train(tiny_train_config(steps=2, strict_fp32=False, grad_checkpoint=True), out, resume=True, quiet=True)
    assert result.status == "finished" and result.step == 2


def _gib(text: str, row: str) -> float:
    return float(re.search(rf"{row}\s+([\d.]+) GiB", text).group(1))


def test_estimate_memory_plans_base_for_an_80gb_card(tmp_path):
    """The audit counted 76.1 GiB of saved activations for preset base at batch 4, 17x256x256, bf16 (F5): the
    default config does not fit an 80 GB card; checkpointing brings it well under."""
    args = ["train", "--preset", "base", "--data", "synthetic:mix", "--batch-size", "4", "--frames", "17", "--size",
            "256", "--device", "cuda", "--precision", "bf16", "--estimate-memory"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert 0.8 * 76.1 <= _gib(plain.output, "saved activations") <= 1.2 * 76.1
    assert _gib(plain.output, "parameters \\(335.4 M\\)") == pytest.approx(1.25, abs=0.01)  # fp32 weights
    checkpointed = runner.invoke(app, [*args, "--grad-checkpoint"])
    assert checkpointed.exit_code == 0, checkpointed.output
    assert _gib(checkpointed.output, "saved activations") < 25
    assert not list(tmp_path.iterdir())  # nothing written, no run folder needed


def test_estimate_memory_of_init_weights_and_the_decoder_stage():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "weights" / "pvvae-small"
    video = runner.invoke(app, ["train", "--init", str(shipped), "--data", "synthetic:mix", "--size", "128",
                                "--precision", "fp32", "--device", "cpu", "--estimate-memory"])
    decoder = runner.invoke(app, ["finetune-decoder", "--init", str(shipped), "--data", "synthetic:mix", "--size",
                                  "128", "--precision", "fp32", "--device", "cpu", "--estimate-memory"])
    assert video.exit_code == 0 and decoder.exit_code == 0, video.output + decoder.output
    # the decoder stage keeps no encoder activations and no encoder gradients
    assert _gib(decoder.output, "saved activations") < _gib(video.output, "saved activations")
    assert "gradients" in decoder.output
