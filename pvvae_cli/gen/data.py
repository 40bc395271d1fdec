"""Training data of ``gen``: a set of latent files written by ``pvvae encode``, held in memory, with labels.

Memory: the set is held once, as one preallocated float32 tensor filled file by file (no list of tensors, no
stacked copy); its per-channel statistics come from a pass over chunks, and batches are normalised as they are
taken (``LatentSet.batch``), so nothing copies the whole set. ``shared_latent_set`` hands a set this process already
holds (the trainer's) to later readers (the evaluation hook) instead of reading it again.

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
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pvvae_cli.codec.latents import FORMAT, FORMAT_VERSION, LATENT_SUFFIX, LatentFormatError, LatentMeta, load_latent
from pvvae_cli.errors import PvvaeError
from pvvae_cli.gen.config import GenConfig


class GenDataError(PvvaeError, ValueError):
    """Latent training data that cannot be used; the message names the file and the fix."""


# Elements converted to float64 at a time by ``LatentSet.channel_stats`` (8 MiB): small next to any set worth chunking.
STATS_CHUNK_ELEMENTS = 1 << 20


@dataclass
class LatentSet:
    """``latents`` float32 ``(N, C, t, h, w)`` as stored (un-normalised by ``gen``; the only copy of the set: take
    batches with ``batch``), ``labels`` int64 ``(N,)`` or ``None``, ``class_names`` (label id -> name), ``files``
    and ``meta`` (the first file's ``LatentMeta``: the VAE and clip geometry every file shares)."""

    latents: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...]
    files: list[Path]
    meta: LatentMeta
    # the epoch permutations ``indices`` last used, by (seed, epoch): at most two (a batch may straddle an epoch end)
    _perms: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.latents.shape[1:])  # type: ignore[return-value]

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation (population) over every clip, frame and position, in float64;
        a constant channel gets std 1 so normalising never divides by zero. Two passes over chunks of clips, each
        converted to float64 on its own (the mean, then the squared deviations from it): the set as a whole is
        never converted."""
        n, c = self.latents.shape[:2]
        rows = max(1, STATS_CHUNK_ELEMENTS // max(1, self.latents[0].numel()))
        count = n * self.latents[0, 0].numel()  # values per channel
        total = torch.zeros(c, dtype=torch.float64)
        for chunk in self.latents.split(rows):  # (rows, C, t, h, w)
            total += chunk.double().sum((0, 2, 3, 4))
        mean = total / count
        squares = torch.zeros(c, dtype=torch.float64)
        centre = mean.view(1, c, 1, 1, 1)
        for chunk in self.latents.split(rows):
            squares += (chunk.double() - centre).square_().sum((0, 2, 3, 4))
        std = (squares / count).sqrt()
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        return tuple(mean.tolist()), tuple(std.tolist())

    def batch(self, idx: torch.Tensor, config: GenConfig) -> torch.Tensor:
        """The clips ``idx`` (int64 ``(B,)``) in the model's space: float32 ``(B, C, t, h, w)`` on the CPU,
        ``normalize(latents[idx], config)`` (elementwise, so the very numbers that normalising the whole set and
        then indexing it gives, without that copy of the set)."""
        return normalize(self.latents[idx], config)

    def indices(self, position: int, count: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The clip indices (int64 ``(count,)``) of this rank's next ``count`` samples from global sample
        ``position`` (this rank takes global samples ``position*world + rank``, ``+ world``, ...): each epoch is a
        permutation seeded by ``(seed, epoch)``, drawn once and kept while steps use it."""
        n = len(self)
        g = (position + torch.arange(count, dtype=torch.long)) * world + rank  # global sample numbers
        epochs, k = g // n, g % n
        out = torch.empty(count, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._permutation(seed, epoch)[k[sel]]
        return out

    def _permutation(self, seed: int, epoch: int) -> torch.Tensor:
        key = (seed, epoch)
        if key not in self._perms:
            if len(self._perms) >= 2:
                del self._perms[next(iter(self._perms))]  # the oldest: steps only move forward
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            self._perms[key] = torch.randperm(len(self), generator=g)
        return self._perms[key]


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
    """``f`` relative to ``root``: as written when it lies below it (files found in a folder do; no file-system
    calls, which add up at 10^5 files), else with both resolved (manifest entries), else ``f`` itself."""
    if ".." not in f.parts:
        try:
            return f.relative_to(root)
        except ValueError:
            pass
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
    # labels before latents: a bad labels file fails before a large set is read
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
        del names

    z, first = _read_latent(files[0])
    latents = torch.empty((len(files), *z.shape), dtype=torch.float32)  # (N, C, t, h, w): the one copy of the set
    latents[0] = z
    for i, f in enumerate(files[1:], 1):
        z, meta = _read_latent(f)
        for key in ("config_hash", "latent_channels", "normalized"):
            if getattr(meta, key) != getattr(first, key):
                raise GenDataError(f"{f}: {key} {getattr(meta, key)!r} differs from {files[0]}'s "
                                   f"{getattr(first, key)!r}: every latent must come from the same VAE "
                                   "(re-encode it with the same --model and options)")
        if z.shape != latents.shape[1:]:
            raise GenDataError(f"{f}: latent shape {tuple(z.shape)} differs from {files[0]}'s "
                               f"{tuple(latents.shape[1:])}: encode every clip with the same --frames and --size")
        latents[i] = z
    data = LatentSet(latents, labels, class_names, files, first)
    _loaded[_set_key(source, labels_csv, class_from_folders)] = data
    return data


def _read_latent(path: Path) -> tuple[torch.Tensor, LatentMeta]:
    """``codec.latents.load_latent`` opening the file once instead of twice (its ``read_meta``, then the tensor):
    with 10^5 small files the opens are most of the loading time. The same checks; a file that fails any of them
    (or is unusual in any way) goes through ``load_latent`` itself, whose error names the problem."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            latent = f.get_tensor("latent") if "latent" in f.keys() else None
        if latent is not None and raw.get("format") == FORMAT and raw.get("format_version") == str(FORMAT_VERSION):
            meta = LatentMeta.from_strings(raw, path)
            if (meta.problem() or meta.tensor_problem(tuple(latent.shape))) is None:
                return latent, meta
    except Exception:  # whatever it is, load_latent below reports it in its own words
        pass
    try:
        return load_latent(path)
    except LatentFormatError as e:
        raise GenDataError(f"{e}; remove it from the training set or re-encode it") from e


# Every set this process has loaded and still holds, by its arguments (weak: a set nobody holds is freed).
_loaded: weakref.WeakValueDictionary[tuple, LatentSet] = weakref.WeakValueDictionary()


def _set_key(source: str | Path, labels_csv: str | Path | None, class_from_folders: bool) -> tuple:
    resolved = None if labels_csv is None else str(Path(labels_csv).expanduser().resolve())
    return str(Path(source).expanduser().resolve()), resolved, bool(class_from_folders)


def shared_latent_set(source: str | Path, labels_csv: str | Path | None = None,
                      class_from_folders: bool = False) -> LatentSet:
    """The set of these arguments that this process already holds (e.g. the trainer's, for the evaluation hook),
    else ``load_latent_set``: one copy of the set in memory, not two. Its files are not read again, so a set
    changed on disk since is not seen (within one training run it must not change anyway)."""
    data = _loaded.get(_set_key(source, labels_csv, class_from_folders))
    return data if data is not None else load_latent_set(source, labels_csv, class_from_folders)


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
