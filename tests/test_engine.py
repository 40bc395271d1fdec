"""The run engine (``pvvae_cli.engine``) under conditions of GPU machines, made to happen on the CPU: a checkpoint
whose random state and EMA came from another kind of device, device-side logging, the shared optimiser."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import read_metrics, tiny_train_config

from pvvae_cli.engine.checkpoints import list_checkpoints
from pvvae_cli.engine.ema import EMA
from pvvae_cli.engine.optim import adamw
from pvvae_cli.train.trainer import train


def test_ema_shadows_follow_the_parameters_device():
    """The audit's X4: a checkpoint is loaded on the CPU; the shadows must land on the parameters' device (here the
    meta device stands in for CUDA) and keep their values' dtype there."""
    model = torch.nn.Linear(3, 2)
    saved = EMA(model, 0.9).state_dict()
    on_device = torch.nn.Linear(3, 2, device="meta")
    ema = EMA(on_device, 0.9)
    ema.load_state_dict(saved)
    assert all(s.device.type == "meta" for s in ema.shadow.values())
    ema.update(on_device)  # would raise "Expected all tensors to be on the same device" with CPU shadows

    cpu_ema = EMA(torch.nn.Linear(3, 2), 0.9)
    cpu_ema.load_state_dict(saved)
    assert all(torch.equal(cpu_ema.shadow[k], saved["shadow"][k]) for k in saved["shadow"])
    with pytest.raises(ValueError, match="trainable parameters"):
        EMA(torch.nn.Linear(3, 3, bias=False), 0.9).load_state_dict(saved)


@pytest.mark.parametrize("recorded", [True, False], ids=["device-recorded", "pre-0.10-checkpoint"])
def test_resume_after_generator_state_and_ema_from_another_device(tmp_path, recorded, one_thread):
    """The audit's X5: a CUDA generator's state is 16 bytes (Philox seed and offset) and a CPU generator refuses it.
    A checkpoint made on a GPU, resumed on the CPU (or the other way round), continues with a warning."""
    out = tmp_path / "run"
    cfg = tiny_train_config(steps=2, ema_decay=0.9, ckpt_every=1)
    assert train(cfg, out, quiet=True).status == "finished"
    path = list_checkpoints(out)[-1]
    ckpt = torch.load(path, weights_only=True)
    ckpt["rng"][0]["noise"] = torch.zeros(16, dtype=torch.uint8)  # what torch.cuda's generator.get_state() gives
    if recorded:
        ckpt["rng"][0]["devices"]["noise"] = "cuda"
    else:
        del ckpt["rng"][0]["devices"]
    torch.save(ckpt, path)

    warnings: list[str] = []
    result = train(cfg.replace(steps=4), out, resume=True, quiet=True, log=warnings.append)
    assert result.status == "finished" and result.step == 4
    assert any("'noise' was saved on another kind of device" in w for w in warnings), warnings
    assert [r["step"] for r in read_metrics(out)] == [0, 1, 2, 3]


def test_logged_terms_are_interval_means(tmp_path, one_thread):
    """Loss terms stay on the device between log lines and are logged as the mean over the interval: with
    log_every 2, the line of step s is the mean of the per-step values of steps s-1 and s (log_every 1)."""
    every = train(tiny_train_config(steps=4, log_every=1), tmp_path / "a", quiet=True)
    pooled = train(tiny_train_config(steps=4, log_every=2), tmp_path / "b", quiet=True)
    assert every.rank_weight_hashes == pooled.rank_weight_hashes  # logging changes nothing computed
    per_step = {r["step"]: r for r in read_metrics(tmp_path / "a")}
    lines = read_metrics(tmp_path / "b")
    assert [r["step"] for r in lines] == [0, 2, 3]  # every 2nd step and the last
    assert lines[1]["loss"] == pytest.approx((per_step[1]["loss"] + per_step[2]["loss"]) / 2, rel=1e-6)
    assert lines[2]["loss"] == pytest.approx(per_step[3]["loss"], rel=1e-6)
    runtime = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
               if json.loads(x)["kind"] == "runtime"]
    assert runtime and runtime[0]["device"] == "cpu" and runtime[0]["dtype"] == "float32"


def test_adamw_groups_and_fused_only_on_cuda():
    conv = torch.nn.Conv2d(2, 2, 3)
    opt = adamw(conv.parameters(), 1e-3, 0.01)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]  # the kernel decays, the bias does not
    assert not opt.defaults.get("fused")  # CPU parameters: the default implementation
    assert len(adamw(conv.parameters(), 1e-3, 0.0, decay_all=True).param_groups) == 1


def test_a_failing_run_with_loader_workers_exits(tmp_path):
    """DataLoader workers ignore SIGTERM (the main process handles a scheduler's stop); an exception escaping the
    loop kept them, and so the process, alive at interpreter exit. The trainer now ends them on the way out."""
    import subprocess
    import sys

    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        "from conftest import tiny_train_config\n"
        "from pvvae_cli.train.trainer import train\n"
        "def boom(step):\n"
        "    raise RuntimeError('planted failure')\n"
        f"train(tiny_train_config(steps=3, workers=2), {str(tmp_path / 'run')!r}, quiet=True, on_step=boom)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "planted failure" in proc.stderr
