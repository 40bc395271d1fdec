"""Input discovery for batch commands: files, folders (recursive) and globs -> jobs with mirrored output paths.

A folder ``clips/`` given as input maps ``clips/a/b.mp4`` to ``OUT/a/b.<suffix>``: the output tree mirrors the
input tree below the folder. A file maps to ``OUT/<name>``; a glob to paths relative to its fixed (wildcard-free)
leading folder. Hidden files and folders (names starting with ``.``, e.g. our own temp files) are skipped in
folder walks. Problems (missing path, unsupported type, two inputs mapping to one output) are returned as
``(input, reason)`` failures, never raised, so that a batch goes on.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """One input file, its path relative to the input root (recorded in outputs) and its output path."""

    source: Path
    rel: Path
    output: Path


def _has_magic(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _walk(root: Path, exts: frozenset[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                found.append(Path(dirpath) / name)
    return found


def expand_inputs(specs: list[str], exts: frozenset[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """``specs`` (files, folders, globs) -> ``[(file, path relative to its root)]`` and ``[(spec, reason)]``.

    Folders and globs keep only files whose lower-case suffix is in ``exts``; a file named explicitly with
    another suffix is a failure ("unsupported file type")."""
    files: list[tuple[Path, Path]] = []
    failures: list[tuple[str, str]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = _walk(path, exts)
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
    files: list[tuple[Path, Path]], out_dir: Path, suffix_for
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Give each ``(file, rel)`` its output ``out_dir / rel`` with the suffix ``suffix_for(file)`` (``""`` for a
    folder). The same file given twice is kept once; two files mapping to one output are a failure."""
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    seen_src: set[Path] = set()
    owner: dict[Path, Path] = {}
    for src, rel in files:
        key = src.resolve()
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
