"""Inputs named in a list file (``pvvae encode --files-from LIST``): a dataset's files without walking its tree.

A scheduler's processes each read the same list and keep their shard's lines as they go, so no process lists a
folder, resolves a path or stats a file before it is its own: with 10^7 files on a parallel file system, walking
the tree in every process is what costs (the audit's X7), and holding 10^7 paths in every process is what fills
the host's memory.

LIST is a text file, one path per line (blank lines and lines starting with ``#`` skipped), or a JSONL manifest
written by ``pvvae encode --manifest`` (``.jsonl``; its ``input`` field). A relative path is relative to ROOT
(``--input-root``, default: the current folder); an absolute one must lie below ROOT. The path relative to ROOT is
the input's name everywhere: its output mirrors it below the output folder, and its shard is the hash of it, the
very key ``--shard`` uses for the same file found by walking ROOT, so either way a file lands in the same shard.
Only path arithmetic happens here: a missing file fails when its turn comes, like any unreadable input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from pvvae_cli.errors import PvvaeError


class FileListError(PvvaeError, ValueError):
    """A list file that cannot be read at all (missing, not text, a manifest line that is not JSON)."""


def list_entries(list_path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, path as written)`` of every entry of ``list_path``, streamed."""
    manifest = list_path.suffix.lower() == ".jsonl"
    try:
        with open(list_path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not manifest:
                    yield number, line
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FileListError(f"{list_path}:{number}: not a JSON object ({e.msg}); a manifest has one "
                                        "per line") from e
                if not isinstance(row, dict) or not isinstance(row.get("input"), str):
                    raise FileListError(f"{list_path}:{number}: no \"input\" field; is it a pvvae encode manifest?")
                yield number, row["input"]
    except OSError as e:
        raise FileListError(f"{list_path}: cannot read the file list ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise FileListError(f"{list_path}: not a text file ({e.reason}); give one path per line") from e


def files_from_list(list_path: Path, root: Path, exts: frozenset[str],
                    keep: Callable[[str], bool] = lambda _rel: True
                    ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]], int]:
    """``(files, failures, total)``: ``[(file, path relative to root)]`` of the entries whose relative path
    ``keep`` accepts (a shard's ``holds``), the problems of those entries as ``(entry, reason)``, and the number of
    usable entries in the whole list. The same relative path twice is kept once."""
    files: list[tuple[Path, Path]] = []
    failures: list[tuple[str, str]] = []
    seen: set[str] = set()
    total = 0
    for number, text in list_entries(list_path):
        path = PurePosixPath(text)
        if path.is_absolute():
            try:
                rel = path.relative_to(PurePosixPath(root.absolute().as_posix()))
            except ValueError:
                rel = None
            if rel is None:
                failures.append((text, f"{list_path}:{number}: not below --input-root {root}; give --input-root a "
                                       "folder that holds every listed file, or list paths relative to it"))
                continue
        else:
            rel = path
        if ".." in rel.parts or not rel.parts:
            failures.append((text, f"{list_path}:{number}: a listed path must stay below --input-root"))
            continue
        key = rel.as_posix()
        total += 1
        if not keep(key) or key in seen:
            continue
        seen.add(key)
        if rel.suffix.lower() not in exts:
            failures.append((text, f"unsupported file type {rel.suffix or '(no suffix)'!r}; expected one of "
                                   f"{', '.join(sorted(exts))}"))
            continue
        files.append((root / Path(key), Path(key)))
    return files, failures, total
