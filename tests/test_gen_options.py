"""gen train's memory and speed options on the run engine: ``grad_accum``, ``grad_checkpoint``, ``compile`` and the
precision default (bf16 autocast on CUDA, as VAE training)."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import read_metrics
from gen_helpers import write_latent_set

from pvvae_cli.gen.train_config import GenTrainConfig
from pvvae_cli.gen.trainer import train_gen


def _cfg(root, **changes) -> GenTrainConfig:
    return GenTrainConfig(**{**dict(data=str(root), class_from_folders=True, preset="tiny", steps=4, batch_size=2,
                                    lr=1e-3, log_every=1, ckpt_every=2, device="cpu", precision="fp32"), **changes})


def test_precision_defaults_to_auto():
    assert GenTrainConfig(data="x").precision == "auto"


def test_grad_accum_resumes_exactly(tmp_path, one_thread):
    write_latent_set(tmp_path / "lat", per_class=2)
    cfg = _cfg(tmp_path / "lat", grad_accum=2)
    train_gen(cfg, tmp_path / "a", quiet=True)

    def interrupt(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    assert train_gen(cfg, tmp_path / "b", quiet=True, on_step=interrupt).status == "interrupted"
    assert train_gen(cfg, tmp_path / "b", resume=True, quiet=True).step == 4
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert a[0]["samples_per_s"] > 0


def test_grad_checkpoint_same_losses(tmp_path, one_thread):
    write_latent_set(tmp_path / "lat", per_class=2)
    train_gen(_cfg(tmp_path / "lat"), tmp_path / "plain", quiet=True)
    train_gen(_cfg(tmp_path / "lat", grad_checkpoint=True), tmp_path / "ckpt", quiet=True)
    plain = [r["loss"] for r in read_metrics(tmp_path / "plain")]
    assert [r["loss"] for r in read_metrics(tmp_path / "ckpt")] == pytest.approx(plain, rel=1e-5)


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path, one_thread):
    write_latent_set(tmp_path / "lat", per_class=2)
    train_gen(_cfg(tmp_path / "lat", steps=3), tmp_path / "eager", quiet=True)
    train_gen(_cfg(tmp_path / "lat", steps=3, compile=True), tmp_path / "compiled", quiet=True)
    eager = [r["loss"] for r in read_metrics(tmp_path / "eager")]
    assert [r["loss"] for r in read_metrics(tmp_path / "compiled")] == pytest.approx(eager, rel=1e-3)
