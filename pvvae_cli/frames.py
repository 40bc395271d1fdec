"""The frame-count rule of causal video autoencoders, written once.

A model with temporal factor ``tc`` (its config's ``temporal_compression``: 4 for t4 models) takes ``1 + tc*k``
frames and gives ``1 + k`` latent frames: the first frame is encoded alone (so one frame is an image), every later
latent frame covers ``tc`` frames. Everything that checks or converts frame counts calls these functions with the
model's own factor, never a literal 4.
"""

from __future__ import annotations


def is_valid_frame_count(num_frames: int, tc: int) -> bool:
    """True when ``num_frames = 1 + tc*k`` for some ``k >= 0``."""
    return num_frames >= 1 and (num_frames - 1) % tc == 0


def nearest_valid_frame_counts(num_frames: int, tc: int) -> tuple[int, int]:
    """The valid counts just below (at least 1) and just above ``num_frames``."""
    k = max((num_frames - 1) // tc, 0)
    return 1 + tc * k, 1 + tc * (k + 1)


def frame_rule_message(num_frames: int, tc: int, what: str = "frame count", letter: str = "k") -> str:
    """``"frame count must be 1 + 4k (1, 5, 9, ...), got 7; nearest valid: 5 or 9"`` (below 1: just ``1``)."""
    lo, hi = nearest_valid_frame_counts(num_frames, tc)
    nearest = str(lo) if num_frames < lo else f"{lo} or {hi}"
    return (f"{what} must be 1 + {tc}{letter} (1, {1 + tc}, {1 + 2 * tc}, ...), got {num_frames}; "
            f"nearest valid: {nearest}")


def check_frame_count(num_frames: int, tc: int, what: str = "frame count") -> None:
    """Raise ``ValueError`` (message from ``frame_rule_message``) unless ``num_frames`` is ``1 + tc*k``."""
    if not is_valid_frame_count(num_frames, tc):
        raise ValueError(frame_rule_message(num_frames, tc, what))


def latent_frame_count(num_frames: int, tc: int) -> int:
    """Latent frames of a valid clip: ``1 + (T - 1) / tc``."""
    check_frame_count(num_frames, tc)
    return 1 + (num_frames - 1) // tc


def pixel_frame_count(latent_frames: int, tc: int) -> int:
    """Frames decoded from ``latent_frames`` latent frames: ``1 + tc*(t - 1)``."""
    if latent_frames < 1:
        raise ValueError(f"latent frame count must be >= 1, got {latent_frames}")
    return 1 + tc * (latent_frames - 1)


def round_down_to_valid(num_frames: int, tc: int) -> int:
    """The largest valid count ``<= num_frames`` (``num_frames >= 1``)."""
    return nearest_valid_frame_counts(num_frames, tc)[0]
