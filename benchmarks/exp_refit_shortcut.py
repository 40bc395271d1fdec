"""Experiment (issue 13): refit the decoder's linear block shortcut of a trained shortcut model by least squares,
given its encoder and the decoder's nonlinear path, on training windows at 64/128/256; print held-out PSNR at each
size before and after, and optionally save the refitted weights.

    python benchmarks/exp_refit_shortcut.py WEIGHTS [OUT]      (expects data/ from examples/get_data.sh)

Before 0.7.0, on partly misread clips (CHANGELOG 0.7.0; relative figures only):
measured on run B of the default-model recipe (README "The default model"): 28.70 / 29.60 / 30.41 dB before,
28.62 / 29.52 / 30.41 after (no gain), so the decoder's linear part is not what keeps the model below block PCA.
"""
import sys
import time

import torch
from bench_baselines import windows  # this script's folder is on sys.path

from pvvae_cli import VideoVAE
from pvvae_cli.metrics.image import psnr_frames
from pvvae_cli.models.block_shortcut import to_blocks

torch.set_num_threads(1)
src = sys.argv[1]
vae = VideoVAE.from_pretrained(src).eval()
dec = vae.decoder
tc, s = vae.config.temporal_compression, vae.config.spatial_compression
C = vae.config.latent_channels
acc = {k: [torch.zeros(C + 1, C + 1, dtype=torch.float64), None] for k in ("first", "rest")}
t0 = time.time()
with torch.no_grad():
    for size, count in ((64, 16), (128, 8), (256, 4)):
        for x in windows("data/train", 17, count, size):
            x = x[None]
            z = vae.encode(x).mode()
            full = dec(z)
            lin = dec.shortcut(z)
            target = x - (full - lin)  # what the linear part should produce
            rows = z.permute(0, 2, 3, 4, 1)
            for key, zr, tr in (("first", rows[:, :1], to_blocks(target[:, :, :1], 1, s)),
                                ("rest", rows[:, 1:], to_blocks(target[:, :, 1:], tc, s))):
                Z = torch.cat([zr.reshape(-1, C), torch.ones(zr[..., :1].numel(), 1)], 1).double()
                T = tr.reshape(Z.shape[0], -1).double()
                acc[key][0] += Z.T @ Z
                acc[key][1] = Z.T @ T if acc[key][1] is None else acc[key][1] + Z.T @ T
print(f"collected in {time.time() - t0:.0f}s")

def evaluate(size):
    held = windows("data/heldout", 17, 4, size)
    with torch.no_grad():
        scores = [psnr_frames(vae.decode(vae.encode(x[None]).mode()).clamp(-1, 1), x[None]).mean() for x in held]
    return float(sum(scores)) / len(scores)

before = {sz: evaluate(sz) for sz in (64, 128, 256)}
with torch.no_grad():
    for key in ("first", "rest"):
        A, B = acc[key]
        sol = torch.linalg.solve(A + 1e-3 * torch.eye(C + 1, dtype=A.dtype), B)  # (C+1, d)
        getattr(dec.shortcut, key).copy_(sol[:C].T.float())
        getattr(dec.shortcut, key + "_mean").copy_(sol[C].float())
after = {sz: evaluate(sz) for sz in (64, 128, 256)}
print("before", before)
print("after", after)
if len(sys.argv) > 2:
    vae.save_pretrained(sys.argv[2])
