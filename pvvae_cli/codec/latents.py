"""The latent file format: one ``.safetensors`` per encoded clip, the interchange between pipeline steps.

A latent file holds

- tensor ``latent``: float32 ``(C, t, h, w)``, the posterior mode (or a sample), normalised with the model's
  ``latents_mean``/``latents_std`` when ``normalized`` is true;
- optionally tensors ``mean`` and ``logvar`` of the same shape (the raw posterior);
- string metadata (safetensors ``__metadata__``, readable by any safetensors tool): ``format = pvvae-latent``,
  ``format_version``, the model and a hash of its config, and every decision needed to invert the encoding
  (frame range, temporal padding, resize, pad/crop). Strings are stored as-is, everything else as JSON.

float32 on disk (not bf16) so that numpy-based safetensors readers can load it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.models.protocol import AutoencoderConfig
from pvvae_cli.runtime.atomic import atomic_path
from pvvae_cli.runtime.device import DTYPES

FORMAT = "pvvae-latent"
FORMAT_VERSION = 1
LATENT_SUFFIX = ".safetensors"


class LatentFormatError(PvvaeError, ValueError):
    """A file that is not a readable pvvae latent file; the message names the file and the problem."""


def config_hash(config: AutoencoderConfig) -> str:
    """sha256 (first 16 hex digits) of the architecture and latent statistics (``config.to_dict()``); the display
    name is left out. Permanent: latent files record it, and decoding compares it."""
    d = config.to_dict()
    d.pop("name", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of every parameter and buffer, in state-dict order: identifies the weights."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LatentMeta:
    """Everything stored beside the latent. Sizes are ``(height, width)``; boxes are ``(top, left, height, width)``.

    Geometry pipeline of the encoder, inverted by the decoder: source frames ``(height, width)`` -> optional
    ``resize`` -> ``fit`` to multiples of the spatial factor (``pad`` adds ``pad`` = (top, bottom, left, right)
    replicated pixels; ``crop`` keeps ``crop`` box; ``resize`` rescales) -> ``(encoded_height, encoded_width)``.
    Time: ``num_frames`` selected frames (``frame_start``, ``frame_stride`` or ``target_fps``) plus ``frame_pad``
    copies of the last frame make ``encoded_frames = 1 + tc*k`` (``pvvae_cli.frames``).
    """

    model: str  # weights folder, hub repo id or preset:NAME, as given
    config_hash: str
    latent_channels: int
    model_tag: str  # e.g. t4s16c64
    normalized: bool
    posterior: str  # "mode" or "sample"
    source: str  # source file, relative to the input root it was found under
    fps: float  # effective frame rate of the encoded frames (0.0 for an image)
    num_frames: int  # frames of the clip as selected (before temporal padding); decode returns exactly these
    height: int  # source frame size
    width: int
    encoded_frames: int
    encoded_height: int
    encoded_width: int
    frame_pad: int = 0
    frame_start: int = 0
    frame_stride: int = 1
    target_fps: float | None = None
    source_fps: float = 0.0
    source_num_frames: int = 0
    resize: tuple[int, int] | None = None
    fit: str = "pad"
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    crop: tuple[int, int, int, int] | None = None
    tiled: bool = False
    dtype: str = "fp32"
    weights_hash: str = ""
    source_bytes: int = 0  # with source_mtime_ns and options_hash: decides whether a re-run may skip the file
    source_mtime_ns: int = 0
    options_hash: str = ""
    pvvae_version: str = ""
    write_id: str = ""  # the run that wrote the file: lets a run check, at its end, that its outputs are its own

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so metadata compares equal after a round trip.
        for key in ("resize", "pad", "crop"):
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))

    def problem(self) -> str | None:
        """What in this metadata is invalid on its own (edited, damaged, or not written by pvvae), or None."""
        import math

        from pvvae_cli.codec.framing import FramePlan

        if not isinstance(self.fps, int | float) or isinstance(self.fps, bool) or not math.isfinite(self.fps) \
                or self.fps < 0:
            return f"fps must be a frame rate >= 0 (0 marks an image), got {self.fps!r}"
        if self.fps == 0 and self.num_frames != 1:
            return f"fps 0 marks an image, but num_frames is {self.num_frames}"
        if not isinstance(self.latent_channels, int) or self.latent_channels < 1:
            return f"latent_channels must be a positive integer, got {self.latent_channels!r}"
        if not isinstance(self.frame_pad, int) or self.frame_pad < 0:
            return f"frame_pad must be an integer >= 0, got {self.frame_pad!r}"
        try:
            why = FramePlan.from_meta(self).inconsistency()
        except (TypeError, ValueError) as e:
            why = f"invalid geometry ({e})"
        if why is None and self.num_frames + self.frame_pad != self.encoded_frames:
            why = (f"num_frames {self.num_frames} + frame_pad {self.frame_pad} is not encoded_frames "
                   f"{self.encoded_frames}")
        return why

    def tensor_problem(self, shape: tuple[int, ...]) -> str | None:
        """What about a latent tensor of ``shape`` contradicts this metadata, or None. Uses the compression
        factors in ``model_tag`` (``t4s16c64``: 4x time, 16x space) when it has that form."""
        if len(shape) != 4 or shape[0] != self.latent_channels:
            return f"latent shape {tuple(shape)} is not ({self.latent_channels}, t, h, w) as its metadata says"
        tag = re.fullmatch(r"t(\d+)s(\d+)c(\d+)", self.model_tag)
        if tag is None:
            return None
        tc, sc = int(tag[1]), int(tag[2])
        if (self.encoded_frames - 1) % tc or self.encoded_height % sc or self.encoded_width % sc:
            return (f"encoded size {self.encoded_frames}x{self.encoded_height}x{self.encoded_width} does not fit a "
                    f"{self.model_tag} model")
        want = (1 + (self.encoded_frames - 1) // tc, self.encoded_height // sc, self.encoded_width // sc)
        if tuple(shape[1:]) != want:
            return (f"latent shape {tuple(shape)} does not match its metadata: {self.encoded_frames} frames of "
                    f"{self.encoded_height}x{self.encoded_width} at {self.model_tag} make (C, {want[0]}, {want[1]}, "
                    f"{want[2]})")
        return None

    def to_strings(self) -> dict[str, str]:
        out = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if isinstance(value, str) else json.dumps(value)
        return out

    @classmethod
    def from_strings(cls, meta: dict[str, str], path: str | Path = "<metadata>") -> LatentMeta:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in meta:
                if f.default is dataclasses.MISSING:
                    raise LatentFormatError(f"{path}: metadata key {f.name!r} is missing")
                continue
            raw = meta[f.name]
            if f.type in ("str", str):
                kwargs[f.name] = raw
            else:
                try:
                    kwargs[f.name] = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise LatentFormatError(f"{path}: metadata key {f.name!r} is not valid JSON: {raw!r}") from e
        return cls(**kwargs)

    def replace(self, **changes: Any) -> LatentMeta:
        return dataclasses.replace(self, **changes)


def options_mismatch(meta: LatentMeta, digest: Callable[[torch.dtype], str], dtype: torch.dtype,
                     device: torch.device) -> str:
    """Why an existing latent's ``options_hash`` is not this run's, for its "made from ..." message: "other encode
    options", saying what differs when it is only the compute dtype.

    ``digest`` hashes this run's options with a dtype (``EncodeOptions.digest``); ``dtype`` and ``device``: this
    run's. The dtype is part of the hash, and ``--dtype auto`` means fp32 on the CPU but bf16 on CUDA, so a batch
    started on the CPU and resumed on a GPU (or the reverse) differs in nothing else."""
    reason = "other encode options"
    written = DTYPES.get(meta.dtype)
    if written is None or written == dtype or digest(written) != meta.options_hash:
        return reason
    ours = next((name for name, d in DTYPES.items() if d == dtype), str(dtype))
    return (f"{reason}: written with dtype {meta.dtype}, this run computes in {ours} on {device.type} (--dtype auto "
            f"is bf16 on CUDA, fp32 on the CPU); pass --dtype {meta.dtype} to continue with the same options")


def save_latent(
    path: str | Path,
    latent: torch.Tensor,
    meta: LatentMeta,
    mean: torch.Tensor | None = None,
    logvar: torch.Tensor | None = None,
) -> Path:
    """Write ``latent`` ``(C, t, h, w)`` (and optionally the posterior ``mean``/``logvar``) with ``meta``, atomically:
    the file appears complete under ``path`` or not at all."""
    from safetensors.torch import save_file

    path = Path(path)
    if latent.ndim != 4:
        raise ValueError(f"latent must be (C, t, h, w), got shape {tuple(latent.shape)}")
    if latent.shape[0] != meta.latent_channels:
        raise ValueError(f"latent has {latent.shape[0]} channels but metadata says {meta.latent_channels}")
    tensors = {"latent": latent}
    for name, t in (("mean", mean), ("logvar", logvar)):
        if t is not None:
            if t.shape != latent.shape:
                raise ValueError(f"{name} must have the latent's shape {tuple(latent.shape)}, got {tuple(t.shape)}")
            tensors[name] = t
    # clone: the mode *is* the mean, and safetensors refuses tensors that share memory.
    tensors = {k: v.detach().to("cpu", torch.float32).clone(memory_format=torch.contiguous_format)
               for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta.to_strings())
    return path


def read_meta(path: str | Path) -> LatentMeta:
    """Parse only the metadata of a latent file (cheap: reads the header). Raises ``LatentFormatError``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LatentFormatError(f"{path}: no such latent file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            keys = set(f.keys())
            shape = tuple(f.get_slice("latent").get_shape()) if "latent" in keys else None
    except Exception as e:
        raise LatentFormatError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    if raw.get("format") != FORMAT:
        raise LatentFormatError(f"{path}: not a pvvae latent file (format={raw.get('format')!r}, "
                                f"expected {FORMAT!r})")
    try:
        version = int(raw.get("format_version", ""))
    except ValueError:
        raise LatentFormatError(f"{path}: invalid format_version {raw.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise LatentFormatError(f"{path}: latent format_version {version} is newer than this pvvae supports "
                                f"({FORMAT_VERSION}); upgrade pvvae")
    if version < 1:
        raise LatentFormatError(f"{path}: invalid format_version {version}")
    if "latent" not in keys:
        raise LatentFormatError(f"{path}: tensor 'latent' is missing (found {sorted(keys)})")
    try:
        meta = LatentMeta.from_strings(raw, path)
    except TypeError as e:
        raise LatentFormatError(f"{path}: invalid metadata ({e})") from e
    why = meta.problem() or meta.tensor_problem(shape)
    if why is not None:
        raise LatentFormatError(f"{path}: invalid latent metadata: {why}; re-encode the source")
    return meta


def load_latent(path: str | Path) -> tuple[torch.Tensor, LatentMeta]:
    """Read a latent file: float32 ``latent`` ``(C, t, h, w)`` and its parsed ``LatentMeta``."""
    from safetensors import safe_open

    meta = read_meta(path)  # validated, against the tensor's shape too
    with safe_open(str(path), framework="pt") as f:
        latent = f.get_tensor("latent")
    return latent, meta


def load_moments(path: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The posterior ``(mean, logvar)`` stored in a latent file, or ``None`` if it was saved without them."""
    from safetensors import safe_open

    read_meta(path)
    with safe_open(str(path), framework="pt") as f:
        if "mean" not in f.keys() or "logvar" not in f.keys():
            return None
        return f.get_tensor("mean"), f.get_tensor("logvar")
