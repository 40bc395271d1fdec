"""Finding media files: the one folder walk that encode, train and eval share, and the batch commands' jobs.

``walk_media`` is the only place that lists a folder: recursive, following symbolic links (each real folder
once), skipping hidden files and folders (names starting with ``.``: our own temp files, ``.git``, ...), keeping
the suffixes asked for (``media_exts``: those of ``video_io``), sorted by path. So one folder gives one set of files
in the same order whichever command reads it.

Batch commands (encode, decode): ``expand_inputs`` turns files, folders and globs into files with their path
relative to the input root, and ``plan_jobs`` mirrors that tree below the output folder: ``clips/a/b.mp4`` given
as ``clips/`` becomes ``OUT/a/b.<suffix>``; a file maps to ``OUT/<name>``; a glob to paths relative to its fixed
(wildcard-free) leading folder. Problems (missing path, unsupported type, two inputs mapping to one output) are
returned as ``(input, reason)`` failures, never raised, so that a batch goes on. ``collect_videos`` is the
raising form for commands that need every input (eval).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pvvae_cli.errors import PvvaeError
from pvvae_cli.media.video_io import IMAGE_EXTS, VIDEO_EXTS


class MediaNotFound(PvvaeError, FileNotFoundError):
    """An input path that does not exist."""


class NoMediaFound(PvvaeError, ValueError):
    """A folder without files of the wanted kind."""


@dataclass(frozen=True)
class Job:
    """One input file, its path relative to the input root (recorded in outputs) and its output path."""

    source: Path
    rel: Path
    output: Path


def _has_magic(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def media_exts(images: bool = True) -> frozenset[str]:
    """The suffixes we read: videos, plus images unless ``images`` is False (clips of more than one frame)."""
    return VIDEO_EXTS | IMAGE_EXTS if images else VIDEO_EXTS


def walk_media(folder: str | Path, exts: frozenset[str]) -> list[Path]:
    """Every file below ``folder`` whose lower-case suffix is in ``exts``, sorted by path; hidden files and folders
    skipped; symbolic links followed, each real folder visited once (a link cycle would never end)."""
    found = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # sorted: which link wins is fixed
        found += [Path(dirpath) / n for n in filenames if not n.startswith(".") and Path(n).suffix.lower() in exts]
    # Sorted by path parts (a/x.mp4 before b.mp4): training samples depend on this order, so it must not change.
    return sorted(found)


def media_files(path: str | Path, exts: frozenset[str]) -> list[Path]:
    """``walk_media`` for a folder; for a file, the file itself if its suffix is in ``exts`` and it is not hidden."""
    path = Path(path)
    if path.is_dir():
        return walk_media(path, exts)
    return [path] if path.suffix.lower() in exts and not path.name.startswith(".") else []


def collect_videos(inputs: Sequence[str | Path], include_images: bool = False) -> list[Path]:
    """Files given directly (any type: a reader reports what it cannot read) plus the videos (and images, with
    ``include_images``) found under folders by ``walk_media``, in input order. Raises ``MediaNotFound`` for a missing
    input and ``NoMediaFound`` for a folder without such files."""
    exts = media_exts(include_images)
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if not p.exists():
            raise MediaNotFound(f"{p}: no such file or folder")
        if p.is_file():
            out.append(p)
            continue
        found = walk_media(p, exts)
        if not found:
            raise NoMediaFound(f"{p}: no video files found ({', '.join(sorted(exts))})")
        out.extend(found)
    return out


def expand_inputs(specs: list[str], exts: frozenset[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """``specs`` (files, folders, globs) -> ``[(file, path relative to its root)]`` and ``[(spec, reason)]``.

    Folders and globs keep only files whose lower-case suffix is in ``exts``; a file named explicitly with
    another suffix is a failure ("unsupported file type")."""
    files: list[tuple[Path, Path]] = []
    failures: list[tuple[str, str]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = walk_media(path, exts)
            if not found:
                failures.append((spec, f"folder has no files with suffix {', '.join(sorted(exts))}"))
            files += [(f, f.relative_to(path)) for f in found]
        elif path.exists():
            if path.suffix.lower() not in exts:
                failures.append((spec, f"unsupported file type {path.suffix or '(no suffix)'!r}; expected one of "
                                       f"{', '.join(sorted(exts))}"))
            else:
                files.append((path, Path(path.name)))
        elif _has_magic(spec):
            parts = Path(spec).parts
            fixed = next((i for i, p in enumerate(parts) if _has_magic(p)), len(parts))
            root = Path(*parts[:fixed]) if fixed else Path(".")
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            matches = [m for m in matches if m.is_file() and m.suffix.lower() in exts]
            if not matches:
                failures.append((spec, "pattern matches no supported files"))
            files += [(m, m.relative_to(root)) for m in matches]
        else:
            failures.append((spec, "no such file or folder"))
    return files, failures


def plan_jobs(
    files: list[tuple[Path, Path]], out_dir: Path, suffix_for, resolve: bool = True
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Give each ``(file, rel)`` its output ``out_dir / rel`` with the suffix ``suffix_for(file)`` (``""`` for a
    folder). The same file given twice is kept once (``resolve=False``: known by its path as given, with no
    file-system call: a file list's entries are already unique); two files mapping to one output are a failure."""
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    seen_src: set[Path] = set()
    owner: dict[Path, Path] = {}
    for src, rel in files:
        key = src.resolve() if resolve else src
        if key in seen_src:
            continue
        seen_src.add(key)
        out = out_dir / rel.with_suffix(suffix_for(src))
        if out in owner:
            failures.append((str(src), f"output {out} would also be written for {owner[out]}; rename one of them"))
            continue
        owner[out] = src
        jobs.append(Job(src, rel, out))
    return jobs, failures
