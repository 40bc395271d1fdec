"""Training data of ``gen``: a set of latent files written by ``pvvae encode``, held in memory, with labels.

Sources: a folder (every ``.safetensors`` below it, hidden files skipped, sorted), or a manifest written by
``pvvae encode --manifest`` (``.jsonl``, one object per line with ``output``), or a text file of latent paths (one
per line). All files must come from the same VAE (config hash, channels, normalisation) and have the same latent
shape: the first odd file is named in the error. Labels: ``--labels FILE.csv`` (rows ``path,label``, ``path``
relative to the folder or as listed; a header row ``path,label`` is allowed) or ``--class-from-folders`` (the first
folder of each file's path below the root). Label names are sorted to give class ids ``0..K-1``.

``normalize``/``denormalize`` map stored latents to the model's per-channel standardised space and back, with the
statistics ``GenConfig`` records.

Batches are a pure function of ``(seed, position)`` (``position`` counts samples in one global stream of
per-epoch permutations), so a resumed run continues exactly and DDP ranks take disjoint samples.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pvvae_cli.codec.latents import LATENT_SUFFIX, LatentFormatError, LatentMeta, load_latent
from pvvae_cli.errors import PvvaeError
from pvvae_cli.gen.config import GenConfig


class GenDataError(PvvaeError, ValueError):
    """Latent training data that cannot be used; the message names the file and the fix."""


@dataclass
class LatentSet:
    """``latents`` float32 ``(N, C, t, h, w)`` as stored (un-normalised by ``gen``), ``labels`` int64 ``(N,)`` or
    ``None``, ``class_names`` (label id -> name), ``files`` and ``meta`` (the first file's ``LatentMeta``: the VAE
    and clip geometry every file shares)."""

    latents: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...]
    files: list[Path]
    meta: LatentMeta

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.latents.shape[1:])  # type: ignore[return-value]

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation over every clip, frame and position (float64 sums); a
        constant channel gets std 1 so normalising never divides by zero."""
        z = self.latents.double().transpose(0, 1).flatten(1)  # (C, N*t*h*w)
        mean = z.mean(1)
        std = z.std(1, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        return tuple(mean.tolist()), tuple(std.tolist())

    def indices(self, position: int, count: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The clip indices of this rank's next ``count`` samples from global sample ``position`` (this rank takes
        global samples ``position*world + rank``, ``+ world``, ...): each epoch is a permutation seeded by
        ``(seed, epoch)``."""
        n = len(self)
        out = []
        cache: dict[int, torch.Tensor] = {}
        for j in range(count):
            g = (position + j) * world + rank
            epoch, k = divmod(g, n)
            if epoch not in cache:
                cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            out.append(int(cache[epoch][k]))
        return torch.tensor(out, dtype=torch.long)


def find_latent_files(source: str | Path) -> tuple[list[Path], Path]:
    """The latent files of ``source`` (a folder, a ``.jsonl`` manifest or a ``.txt`` list) and the root their
    relative paths (labels) are taken against."""
    from pvvae_cli.media.discovery import walk_media

    source = Path(source).expanduser()
    if source.is_dir():
        files = walk_media(source, frozenset({LATENT_SUFFIX}))
        if not files:
            raise GenDataError(f"{source}: no {LATENT_SUFFIX} latent files found; write them with pvvae encode")
        return files, source
    if not source.is_file():
        raise GenDataError(f"{source}: no such folder or file; pass a folder of latent files (pvvae encode -o) or "
                           "its --manifest")
    lines = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
    files = []
    for i, line in enumerate(lines, 1):
        if source.suffix == ".jsonl":
            try:
                entry = Path(json.loads(line)["output"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise GenDataError(f"{source}:{i}: not a manifest line with an 'output' key ({e})") from e
        else:
            entry = Path(line)
        # paths as written at encode time: relative to the working directory then, else to the list's folder
        files.append(entry if entry.is_absolute() or entry.exists() else source.parent / entry)
    if not files:
        raise GenDataError(f"{source}: lists no latent files")
    root = Path(_common_parent(files))
    return files, root


def _common_parent(files: list[Path]) -> str:
    import os

    return os.path.commonpath([str(f.resolve().parent) for f in files])


def read_labels(csv_path: Path, files: list[Path], root: Path) -> list[str]:
    """The label of each file from ``csv_path`` (``path,label`` rows); a file without a row is an error."""
    try:
        rows = list(csv.reader(csv_path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise GenDataError(f"{csv_path}: cannot read the labels file; expected a text CSV of 'path,label' rows "
                           f"({type(e).__name__}: {e})") from e
    table: dict[str, str] = {}
    for i, row in enumerate(rows, 1):
        if not row or (i == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
            continue
        if len(row) != 2:
            raise GenDataError(f"{csv_path}:{i}: expected 'path,label', got {row!r}")
        table[_key(Path(row[0].strip()))] = row[1].strip()
    labels = []
    for f in files:
        keys = [_key(_rel(f, root)), _key(f), _key(_rel(f, root).with_suffix("")), f.stem]
        label = next((table[k] for k in keys if k in table), None)
        if label is None:
            raise GenDataError(f"{csv_path}: no label for {f} (add a row '{_rel(f, root).as_posix()},LABEL')")
        labels.append(label)
    return labels


def _rel(f: Path, root: Path) -> Path:
    try:
        return f.resolve().relative_to(root.resolve())
    except ValueError:
        return f


def _key(p: Path) -> str:
    return p.as_posix()


def load_latent_set(source: str | Path, labels_csv: str | Path | None = None,
                    class_from_folders: bool = False) -> LatentSet:
    """Read and check every latent file of ``source`` (see the module docstring). Raises ``GenDataError`` naming
    the first file that does not match the first one, or that cannot be read."""
    if labels_csv is not None and class_from_folders:
        raise GenDataError("give --labels FILE.csv or --class-from-folders, not both")
    files, root = find_latent_files(source)
    first: LatentMeta | None = None
    latents = []
    for f in files:
        try:
            z, meta = load_latent(f)
        except LatentFormatError as e:
            raise GenDataError(f"{e}; remove it from the training set or re-encode it") from e
        if first is None:
            first = meta
        else:
            for key in ("config_hash", "latent_channels", "normalized"):
                if getattr(meta, key) != getattr(first, key):
                    raise GenDataError(f"{f}: {key} {getattr(meta, key)!r} differs from {files[0]}'s "
                                       f"{getattr(first, key)!r}: every latent must come from the same VAE "
                                       "(re-encode it with the same --model and options)")
        if latents and z.shape != latents[0].shape:
            raise GenDataError(f"{f}: latent shape {tuple(z.shape)} differs from {files[0]}'s "
                               f"{tuple(latents[0].shape)}: encode every clip with the same --frames and --size")
        latents.append(z)
    assert first is not None
    names: list[str] | None = None
    if labels_csv is not None:
        names = read_labels(Path(labels_csv), files, root)
    elif class_from_folders:
        names = []
        for f in files:
            parts = _rel(f, root).parts
            if len(parts) < 2:
                raise GenDataError(f"{f}: is not inside a class folder of {root} (--class-from-folders expects "
                                   f"{root}/CLASS/.../clip{LATENT_SUFFIX})")
            names.append(parts[0])
    labels, class_names = None, ()
    if names is not None:
        class_names = tuple(sorted(set(names)))
        if len(class_names) < 2:
            raise GenDataError(f"{source}: the labels name only {len(class_names)} class ({class_names}); a "
                               "class-conditional model needs at least 2 (drop the labels to train unconditionally)")
        ids = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([ids[n] for n in names], dtype=torch.long)
    return LatentSet(torch.stack(latents), labels, class_names, files, first)


def normalize(z: torch.Tensor, config: GenConfig) -> torch.Tensor:
    """Stored latents ``(..., C, t, h, w)`` -> the model's space: ``(z - mean) / std`` per channel."""
    mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)
    std = torch.tensor(config.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
    return (z.float() - mean.to(z.device)) / std.to(z.device)


def denormalize(z: torch.Tensor, config: GenConfig) -> torch.Tensor:
    """The inverse of ``normalize``: the model's space -> latents as the files store them."""
    mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)
    std = torch.tensor(config.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
    return z.float() * std.to(z.device) + mean.to(z.device)
