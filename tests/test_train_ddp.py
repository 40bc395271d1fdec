"""Two-process DistributedDataParallel training (gloo on CPU) through torchrun and the CLI."""

import os
import subprocess
import sys

import torch
from conftest import read_metrics

from pvvae_cli import VideoVAE


def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pvvae_cli", "train", "--preset", "tiny", "--data", "synthetic:mix", "--size", "32", "--frames", "5",
           "--batch-size", "1", "--steps", "3", "--workers", "0", "--val-clips", "1", "--gan-start-step", "1",
           "--log-every", "1", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("finished 3 steps") == 1  # one process reports
    final = read_metrics(out, "final")
    assert len(final) == 1  # one logger
    hashes = final[0]["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # both replicas hold the same weights
    train_lines = read_metrics(out)
    assert [r["step"] for r in train_lines] == [0, 1, 2]
    assert "gan" not in train_lines[0] and "gan" in train_lines[1]  # GAN in DDP too, from its step
    # the exported weights were trained (differ from the preset's initialisation with the same seed)
    torch.manual_seed(0)
    init = VideoVAE.from_preset("tiny")
    trained = VideoVAE.from_pretrained(out / "weights")
    assert not torch.equal(init.decoder.conv_out.weight, trained.decoder.conv_out.weight)
