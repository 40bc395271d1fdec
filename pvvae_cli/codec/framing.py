"""Frame geometry and count decisions: how a clip of any size and length becomes valid model input, and back.

The model takes ``1 + tc*k`` frames (``pvvae_cli.frames``) whose height and width are multiples of its spatial
factor ``s`` (``tc = 4``, ``s = 16`` for t4s16). A ``FramePlan``
records, for one clip, every decision made to get there (resize, pad/crop/resize to a multiple, repeated last
frames) so that decoding returns exactly the original number of frames at the original size. Nothing is ever
dropped silently: frames are only added (and removed again on decode), pixels only cropped when asked.

Pixel tensors here are float ``(3, T, H, W)`` or ``(B, 3, T, H, W)`` in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pvvae_cli.frames import is_valid_frame_count, nearest_valid_frame_counts

FITS = ("pad", "crop", "resize")


@dataclass(frozen=True)
class FramePlan:
    """Geometry of one clip. Sizes are ``(height, width)``; ``pad`` is (top, bottom, left, right); ``crop`` is
    (top, left, height, width) in the resized frame.

    Encode: source ``(height, width)`` -> ``resize`` (if set) -> ``fit`` to multiples of the spatial factor
    -> ``(encoded_height, encoded_width)``; ``num_frames`` + ``frame_pad`` copies of the last frame =
    ``encoded_frames``. Decode inverts each step (a crop cannot be undone: the output is the cropped region).
    """

    num_frames: int
    height: int
    width: int
    encoded_frames: int
    encoded_height: int
    encoded_width: int
    resize: tuple[int, int] | None = None
    fit: str = "pad"
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    crop: tuple[int, int, int, int] | None = None

    @classmethod
    def from_meta(cls, meta) -> FramePlan:
        """The plan recorded in a latent file's metadata (a ``codec.latents.LatentMeta``)."""
        return cls(meta.num_frames, meta.height, meta.width, meta.encoded_frames, meta.encoded_height,
                   meta.encoded_width, meta.resize, meta.fit, meta.pad, meta.crop)

    @property
    def frame_pad(self) -> int:
        return self.encoded_frames - self.num_frames

    def inconsistency(self) -> str | None:
        """What in this plan contradicts itself (a recorded plan someone edited or damaged), or None. Catches
        a changed frame count or source size unless the geometry went through a resize (which maps any size)."""
        sizes = (self.num_frames, self.height, self.width, self.encoded_frames, self.encoded_height,
                 self.encoded_width)
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in sizes):
            return f"frame counts and sizes must be positive integers, got {sizes}"
        if self.num_frames > self.encoded_frames:
            return (f"num_frames {self.num_frames} is more than the {self.encoded_frames} encoded frames (the latent "
                    f"holds at most {self.encoded_frames})")
        if self.fit not in FITS:
            return f"unknown fit {self.fit!r}"
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            return f"invalid resize {self.resize}"
        rh, rw = self.resized_size
        eh, ew = self.encoded_height, self.encoded_width
        if self.fit == "pad":
            if len(self.pad) != 4 or min(self.pad) < 0:
                return f"invalid pad {self.pad}"
            top, bottom, left, right = self.pad
            if (rh + top + bottom, rw + left + right) != (eh, ew):
                return (f"a {rh}x{rw} frame padded by {self.pad} is not the encoded {eh}x{ew} (height/width or pad "
                        "was changed)")
        elif self.fit == "crop":
            if self.crop is None or len(self.crop) != 4:
                return f"invalid crop {self.crop}"
            top, left, ch, cw = self.crop
            if (ch, cw) != (eh, ew) or top < 0 or left < 0 or top + ch > rh or left + cw > rw:
                return f"crop box {self.crop} does not fit a {rh}x{rw} frame and the encoded {eh}x{ew}"
        return None

    @property
    def resized_size(self) -> tuple[int, int]:
        return self.resize if self.resize is not None else (self.height, self.width)

    def output_size(self, source_size: bool = True) -> tuple[int, int]:
        """Frame size that ``invert`` returns: the source size (or, with ``source_size=False``, the size after
        the user's resize); for ``fit == "crop"`` the cropped region at that scale."""
        rh, rw = self.resized_size
        if self.fit == "crop":
            _, _, ch, cw = self.crop
            if not source_size or self.resize is None:
                return ch, cw
            return max(1, round(ch * self.height / rh)), max(1, round(cw * self.width / rw))
        return (self.height, self.width) if source_size else (rh, rw)

    # ------------------------------------------------------------------ pixels
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Source pixels ``(3, n, height, width)`` -> model pixels ``(3, n, encoded_height, encoded_width)``
        (time is not touched: see ``pad_frames``)."""
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"frames are {tuple(x.shape[-2:])}, the plan expects {(self.height, self.width)}")
        if self.resize is not None:
            x = _resize(x, self.resize)
        if self.fit == "pad":
            top, bottom, left, right = self.pad
            if top or bottom or left or right:
                # Replicate the edge: a constant border would add an artificial edge the model must encode.
                x = _pad_replicate(x, left, right, top, bottom)
        elif self.fit == "crop":
            top, left, h, w = self.crop
            x = x[..., top : top + h, left : left + w]
        elif (self.encoded_height, self.encoded_width) != tuple(x.shape[-2:]):
            x = _resize(x, (self.encoded_height, self.encoded_width))
        return x

    def invert(self, x: torch.Tensor, source_size: bool = True) -> torch.Tensor:
        """Decoded pixels ``(3, n, encoded_height, encoded_width)`` -> ``(3, n, *output_size(source_size))``."""
        rh, rw = self.resized_size
        if self.fit == "pad":
            top, _, left, _ = self.pad
            x = x[..., top : top + rh, left : left + rw]
        elif self.fit == "resize" and (rh, rw) != tuple(x.shape[-2:]):
            x = _resize(x, (rh, rw))
        out = self.output_size(source_size)
        if tuple(x.shape[-2:]) != out:
            x = _resize(x, out)
        return x


def _pad_replicate(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    # F.pad's replicate mode pads the last two axes of a 4D tensor: fold everything else into (N, C).
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, *shape[-2:]), (left, right, top, bottom), mode="replicate")
    return y.reshape(*shape[:-2], *y.shape[-2:])


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two axes of ``(3, n, H, W)`` (antialiased when shrinking), clamped to [-1, 1]."""
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:]).float()
    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.clamp_(-1.0, 1.0).reshape(*shape[:-2], *size).to(x.dtype)


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (height x width) or ``"N"`` (N x N) -> ``(H, W)``; raises ``ValueError``."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"invalid size {text!r}: use HEIGHTxWIDTH such as 480x640, or N for N x N")
    return values[0], values[1]


def plan_frames(
    num_frames: int,
    height: int,
    width: int,
    *,
    size: tuple[int, int] | None = None,
    max_size: int | None = None,
    fit: str = "pad",
    spatial_factor: int = 16,
    temporal_factor: int = 4,
) -> FramePlan:
    """Decide how ``num_frames`` frames of ``height x width`` become model input.

    ``size``: resize to exactly ``(H, W)`` first. ``max_size``: shrink (never enlarge) so the longer side is at
    most this, keeping the aspect ratio. ``fit``: how to reach multiples of ``spatial_factor``: ``pad``
    (replicate the bottom/right edge; undone exactly on decode), ``crop`` (centre crop; not undone) or
    ``resize`` (to the nearest multiple; resized back on decode). Frames are padded to the next ``1 + tc*k``
    (``tc = temporal_factor``) by repeating the last one.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"empty clip: {num_frames} frames of {height}x{width}")
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if size is not None and max_size is not None:
        raise ValueError("give either a size or a max size, not both")
    resize = None
    if size is not None:
        resize = (int(size[0]), int(size[1]))
    elif max_size is not None:
        if max_size < 1:
            raise ValueError(f"max size must be >= 1, got {max_size}")
        longer = max(height, width)
        if longer > max_size:
            scale = max_size / longer
            resize = (max(1, round(height * scale)), max(1, round(width * scale)))
    if resize == (height, width):
        resize = None
    rh, rw = resize if resize is not None else (height, width)
    s = spatial_factor
    pad, crop = (0, 0, 0, 0), None
    if fit == "pad":
        eh, ew = -(-rh // s) * s, -(-rw // s) * s
        pad = (0, eh - rh, 0, ew - rw)
    elif fit == "crop":
        eh, ew = rh - rh % s, rw - rw % s
        if eh == 0 or ew == 0:
            raise ValueError(f"frames of {rh}x{rw} are smaller than {s} pixels: cannot crop to a multiple of {s}; "
                             "use --fit pad")
        crop = ((rh - eh) // 2, (rw - ew) // 2, eh, ew)
    else:
        eh, ew = max(s, round(rh / s) * s), max(s, round(rw / s) * s)
    t = temporal_factor
    encoded_frames = num_frames if is_valid_frame_count(num_frames, t) else nearest_valid_frame_counts(num_frames, t)[1]
    return FramePlan(num_frames, height, width, encoded_frames, eh, ew, resize, fit, pad, crop)


def pad_frames(x: torch.Tensor, count: int) -> torch.Tensor:
    """Append ``count`` copies of the last frame to ``(..., T, H, W)`` pixels (time is axis -3)."""
    if count <= 0:
        return x
    last = x[..., -1:, :, :]
    return torch.cat([x, last.expand(*last.shape[:-3], count, *last.shape[-2:])], dim=-3)
