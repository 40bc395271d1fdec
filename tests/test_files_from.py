"""``pvvae encode --files-from LIST``: inputs from a list or a manifest, sharded while the list is read, named by
their path relative to ``--input-root`` (the same outputs and the same shards as walking that folder)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import bright_bar_clip, cli

from pvvae_cli.codec.latents import load_latent
from pvvae_cli.media.file_list import files_from_list
from pvvae_cli.media.sharding import Shard
from pvvae_cli.media.writer import write_video

MODEL = "preset:tiny"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    for i, rel in enumerate(["a/v0.mp4", "a/v1.mp4", "b/c/v2.mp4", "v3.mp4"]):
        write_video(root / rel, bright_bar_clip(5, seed=i), fps=8)
    return root


def _latents(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors"))


def test_a_list_encodes_what_walking_the_folder_does(tree, tmp_path, one_thread):
    listing = tmp_path / "list.txt"
    listing.write_text("# the clips\na/v0.mp4\n\nb/c/v2.mp4\n" + str(tree / "v3.mp4") + "\na/v0.mp4\n")
    res = cli("encode", "--files-from", listing, "--input-root", tree, "-o", tmp_path / "lat", "--model", MODEL, "-q")
    assert res.exit_code == 0, res.output
    assert _latents(tmp_path / "lat") == ["a/v0.safetensors", "b/c/v2.safetensors", "v3.safetensors"]
    walked = cli("encode", tree, "-o", tmp_path / "walk", "--model", MODEL, "-q")
    assert walked.exit_code == 0
    (z_list, meta_list), (z_walk, meta_walk) = (load_latent(tmp_path / d / "a" / "v0.safetensors")
                                                for d in ("lat", "walk"))
    assert torch.equal(z_list, z_walk) and meta_list.options_hash == meta_walk.options_hash


def test_shards_of_a_list_match_the_shards_of_the_folder_and_cover_it(tree, tmp_path, one_thread):
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p.relative_to(tree).as_posix()}\n" for p in sorted(tree.rglob("*.mp4"))))
    got = []
    for i in range(2):
        out = tmp_path / f"s{i}"
        res = cli("encode", "--files-from", listing, "--input-root", tree, "-o", out, "--model", MODEL, "--shard",
                  f"{i}/2", "-q")
        assert res.exit_code == 0, res.output
        assert cli("encode", tree, "-o", tmp_path / f"w{i}", "--model", MODEL, "--shard", f"{i}/2",
                   "-q").exit_code == 0
        assert _latents(out) == _latents(tmp_path / f"w{i}")
        got += _latents(out)
    assert sorted(got) == _latents_expected(tree)


def _latents_expected(tree):
    return sorted(p.relative_to(tree).with_suffix(".safetensors").as_posix() for p in tree.rglob("*.mp4"))


def test_a_shard_touches_no_file_of_the_others(tmp_path, monkeypatch):
    """Only path arithmetic before the shard is taken: no stat, no resolve (10^7 files on a parallel file system)."""
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"x/clip{i}.mp4\n" for i in range(1000)))
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: calls.append(str(p)) or real_stat(p, *a, **k))
    files, failures, total = files_from_list(listing, tmp_path / "root", frozenset({".mp4"}), Shard(3, 8).holds)
    assert total == 1000 and not failures and 80 < len(files) < 170
    assert all(Shard(3, 8).holds(rel.as_posix()) for _, rel in files)
    assert not [c for c in calls if "clip" in c]


def test_a_manifest_is_a_list_and_bad_entries_are_reported(tree, tmp_path, one_thread):
    manifest = tmp_path / "m.jsonl"
    assert cli("encode", tree / "a", "-o", tmp_path / "lat0", "--model", MODEL, "--manifest", manifest,
               "-q").exit_code == 0
    assert len(manifest.read_text().splitlines()) == 2
    res = cli("encode", "--files-from", manifest, "--input-root", tree / "a", "-o", tmp_path / "lat", "--model",
              MODEL, "-q")
    assert res.exit_code == 0 and _latents(tmp_path / "lat") == ["v0.safetensors", "v1.safetensors"]

    listing = tmp_path / "bad.txt"
    listing.write_text("a/v0.mp4\n/elsewhere/v9.mp4\nnotes.txt\n../up.mp4\nmissing.mp4\n")
    res = cli("encode", "--files-from", listing, "--input-root", tree, "-o", tmp_path / "lat2", "--model", MODEL,
              "-q")
    assert res.exit_code == 1  # the batch goes on past bad entries and reports each
    assert "not below --input-root" in res.output and "unsupported file type '.txt'" in res.output
    assert "must stay below --input-root" in res.output and "missing.mp4" in res.output
    assert _latents(tmp_path / "lat2") == ["a/v0.safetensors"]


def test_usage_errors(tree, tmp_path):
    res = cli("encode", tree, "--files-from", tmp_path / "l.txt", "-o", tmp_path / "lat", "--model", MODEL)
    assert res.exit_code == 2 and "not both" in res.output
    res = cli("encode", "--files-from", tmp_path / "missing.txt", "-o", tmp_path / "lat", "--model", MODEL)
    assert res.exit_code == 2 and "cannot read the file list" in res.output
    (tmp_path / "m.jsonl").write_text(json.dumps({"output": "x"}) + "\n")
    res = cli("encode", "--files-from", tmp_path / "m.jsonl", "-o", tmp_path / "lat", "--model", MODEL)
    assert res.exit_code == 2 and "no \"input\" field" in res.output
    res = cli("encode", "-o", tmp_path / "lat", "--model", MODEL)
    assert res.exit_code == 2 and "give the inputs" in res.output
