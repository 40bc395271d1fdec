"""Generate the small example clips in this folder (deterministic; real motion; all procedurally drawn).

    python examples/make_examples.py            # writes examples/*.mp4 and examples/still.png

- ``bouncing_shapes.mp4``: 33 frames 128x128 @ 12 fps, a disc and a square bouncing with different speeds.
- ``texture_pan.mp4``: 33 frames 128x192 @ 12 fps, a camera pan (and slow zoom) over a procedural texture.
- ``rotating_bars.mp4``: 17 frames 96x96 @ 8 fps, a rotating colour wheel with a moving vertical bar.
- ``odd_size.mp4``: 18 frames 70x100 @ 10 fps (neither 1+4k frames nor multiples of 16: exercises padding).
- ``still.png``: a 70x100 image (a 1-frame clip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pvvae_cli.media.writer import write_video

HERE = Path(__file__).resolve().parent
CRF = 20  # small files; plenty for examples


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")


def bouncing_shapes(t: int = 33, h: int = 128, w: int = 128) -> np.ndarray:
    yy, xx = grid(h, w)
    background = np.stack([40 + 30 * np.sin(xx / 17), 50 + 20 * np.cos(yy / 13), 70 + 0 * xx], axis=-1)
    frames = []
    for i in range(t):
        img = background.copy()
        cy, cx = 64 + 40 * np.sin(i / 5), 20 + abs((i * 7) % 176 - 88)  # bounce horizontally
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] = (230, 80, 60)
        sy, sx = int(10 + abs((i * 5) % 196 - 98)), int(90 - 30 * np.cos(i / 4))
        img[max(sy - 12, 0) : sy + 12, max(sx - 12, 0) : sx + 12] = (60, 200, 120)
        frames.append(img)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def texture_pan(t: int = 33, h: int = 128, w: int = 192) -> np.ndarray:
    rng = np.random.default_rng(3)
    big_h, big_w = 256, 512
    yy, xx = grid(big_h, big_w)
    tex = np.zeros((big_h, big_w, 3), np.float32)
    for _ in range(24):  # a sum of random oriented waves: a rich but smooth texture
        fy, fx, ph = rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(0, 6.3)
        tex += rng.uniform(5, 20, size=3) * np.sin(fy * yy + fx * xx + ph)[..., None]
    tex = tex - tex.min()
    tex = tex / tex.max() * 255
    frames = []
    for i in range(t):
        scale = 1.0 - 0.008 * i
        ys = (np.arange(h) * scale + 40 + i * 1.5).astype(int) % big_h
        xs = (np.arange(w) * scale + i * 6).astype(int) % big_w
        frames.append(tex[ys][:, xs])
    return np.stack(frames).astype(np.uint8)


def rotating_bars(t: int = 17, h: int = 96, w: int = 96) -> np.ndarray:
    yy, xx = grid(h, w)
    angle = np.arctan2(yy - h / 2, xx - w / 2)
    frames = []
    for i in range(t):
        a = angle + i * 0.25
        img = np.stack([128 + 120 * np.sin(3 * a + phase) for phase in (0.0, 2.1, 4.2)], -1)
        x0 = 5 + i * 5
        img[:, x0 : x0 + 6] = 255
        frames.append(img)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def main() -> None:
    write_video(HERE / "bouncing_shapes.mp4", bouncing_shapes(), fps=12, crf=CRF)
    write_video(HERE / "texture_pan.mp4", texture_pan(), fps=12, crf=CRF)
    write_video(HERE / "rotating_bars.mp4", rotating_bars(), fps=8, crf=CRF)
    write_video(HERE / "odd_size.mp4", bouncing_shapes(18, 70, 100), fps=10, crf=CRF)
    write_video(HERE / "still.png", texture_pan(1, 70, 100), fps=0)
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.suffix in (".mp4", ".png"))
    print(f"wrote examples to {HERE} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
