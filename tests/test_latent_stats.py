"""``pvvae stats`` (issue 28 item 4): per-channel latent statistics, streaming, shardable, mergeable, written into
a weights folder."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pvvae_cli.cli.app import app
from pvvae_cli.codec.latent_stats import ChannelStats, LatentStatsError, compute_stats, read_stats
from pvvae_cli.codec.latents import LatentMeta, config_hash, load_latent, save_latent
from pvvae_cli.models.registry import get_preset

runner = CliRunner()
C = 8  # preset:tiny's latent channels


def tiny_meta(config=None, **changes) -> LatentMeta:
    cfg = config or get_preset("tiny")
    t, h, w = 3, 4, 6
    return LatentMeta(model="preset:tiny", config_hash=config_hash(cfg), latent_channels=C, model_tag=cfg.tag,
                      normalized=False, posterior="mode", source="", fps=8.0, num_frames=1 + 4 * (t - 1),
                      height=16 * h, width=16 * w, encoded_frames=1 + 4 * (t - 1), encoded_height=16 * h,
                      encoded_width=16 * w).replace(**changes)


def raw_latents(n: int = 7, seed: int = 0) -> list[torch.Tensor]:
    """Channels with very different means and scales (a large offset tests the stable update)."""
    g = torch.Generator().manual_seed(seed)
    offset = torch.linspace(-3, 1000, C).view(C, 1, 1, 1)
    scale = torch.logspace(-2, 1, C).view(C, 1, 1, 1)
    return [torch.randn((C, 3, 4, 6), generator=g) * scale + offset for _ in range(n)]


@pytest.fixture
def latent_dir(tmp_path):
    zs = raw_latents()
    for i, z in enumerate(zs):
        save_latent(tmp_path / "lat" / f"sub{i % 2}" / f"clip{i}.safetensors", z, tiny_meta(source=f"clip{i}"))
    return tmp_path / "lat", zs


def reference(zs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack(zs).double()
    return x.mean((0, 2, 3, 4)), x.std((0, 2, 3, 4), unbiased=False)


def assert_close(a, b, rel=1e-10):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               rtol=rel, atol=0)


def test_compute_stats_equals_torch_over_the_stacked_set(latent_dir):
    root, zs = latent_dir
    stats = compute_stats(sorted(root.rglob("*.safetensors")))
    mean, std = reference(zs)
    assert stats.files == len(zs) and stats.count == len(zs) * 3 * 4 * 6
    assert_close(stats.mean, mean)
    assert_close(stats.std, std)
    assert stats.config_hash == config_hash(get_preset("tiny")) and stats.model == "preset:tiny"


def test_merge_of_parts_and_dict_round_trip():
    zs = raw_latents(5, seed=1)
    a, b, whole = ChannelStats(), ChannelStats(), ChannelStats()
    for i, z in enumerate(zs):
        (a if i < 2 else b).update(z)
        whole.update(z)
    merged = ChannelStats.from_dict(json.loads(json.dumps(a.to_dict()))).merge(ChannelStats.from_dict(b.to_dict()))
    assert merged.count == whole.count
    assert_close(merged.mean, whole.mean, 1e-12)
    assert_close(merged.m2, whole.m2, 1e-12)
    assert ChannelStats().merge(whole).count == whole.count  # an empty shard is neutral


def test_normalised_files_are_denormalised_with_their_models_stats(tmp_path):
    zs = raw_latents(3, seed=2)
    cfg = get_preset("tiny").replace(latents_mean=tuple(float(v) for v in range(C)),
                                     latents_std=tuple(0.5 + v for v in range(C)))
    mean_t = torch.tensor(cfg.latents_mean).view(C, 1, 1, 1)
    std_t = torch.tensor(cfg.latents_std).view(C, 1, 1, 1)
    files = [save_latent(tmp_path / f"n{i}.safetensors", (z.double() - mean_t) / std_t,
                         tiny_meta(cfg, normalized=True)) for i, z in enumerate(zs)]
    stats = compute_stats(files, lambda meta: cfg)
    stored = [load_latent(f)[0].double() * std_t.double() + mean_t.double() for f in files]  # float32 on disk
    mean, std = reference(stored)
    assert stats.normalized_files == 3
    assert_close(stats.mean, mean)
    assert_close(stats.std, std)
    assert_close(stats.mean, reference(zs)[0], 1e-5)  # the raw latents, up to float32 rounding of the files
    with pytest.raises(LatentStatsError, match="cannot undo"):
        compute_stats(files, lambda meta: get_preset("tiny"))  # another config: refused
    with pytest.raises(LatentStatsError, match="normalised"):
        compute_stats(files)


def test_cli_whole_and_shards_merged(latent_dir, tmp_path):
    root, zs = latent_dir
    res = runner.invoke(app, ["stats", str(root), "-o", str(tmp_path / "all.json")])
    assert res.exit_code == 0, res.output
    whole = read_stats(tmp_path / "all.json")
    mean, std = reference(zs)
    assert_close(whole.mean, mean)
    assert_close(whole.std, std)
    raw = json.loads((tmp_path / "all.json").read_text())
    assert raw["files"] == len(zs) and raw["config_hash"] == whole.config_hash and raw["space"] == "raw"
    parts = []
    for i in range(2):
        out = tmp_path / f"s{i}.json"
        res = runner.invoke(app, ["stats", str(root), "--shard", f"{i}/2", "-o", str(out), "-q"])
        assert res.exit_code == 0, res.output
        parts.append(str(out))
    assert sum(read_stats(p).files for p in parts) == len(zs)
    res = runner.invoke(app, ["stats", "--merge", *parts, "-o", str(tmp_path / "merged.json")])
    assert res.exit_code == 0, res.output
    merged = read_stats(tmp_path / "merged.json")
    assert merged.files == whole.files and merged.count == whole.count
    assert_close(merged.mean, whole.mean, 1e-12)
    assert_close(merged.std, whole.std, 1e-12)


def test_cli_manifest_list_and_stdout(latent_dir, tmp_path):
    root, zs = latent_dir
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(root.rglob("*.safetensors"))) + "\n")
    res = runner.invoke(app, ["stats", str(listing), "-q"])
    assert res.exit_code == 0, res.output
    printed = ChannelStats.from_dict(json.loads(res.stdout))
    assert printed.files == len(zs)
    assert_close(printed.mean, reference(zs)[0])


def test_cli_refuses_latents_of_another_vae(latent_dir, tmp_path):
    root, _ = latent_dir
    odd = root / "sub1" / "zz_odd.safetensors"
    save_latent(odd, raw_latents(1)[0], tiny_meta(config_hash="0123456789abcdef", model="other"))
    res = runner.invoke(app, ["stats", str(root), "-o", str(tmp_path / "x.json")])
    assert res.exit_code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(odd) in lines[0] and "config hash 0123456789abcdef" in lines[0]
    assert not (tmp_path / "x.json").exists()


def test_cli_merge_refuses_mixed_vaes(latent_dir, tmp_path):
    root, _ = latent_dir
    assert runner.invoke(app, ["stats", str(root), "-o", str(tmp_path / "a.json")]).exit_code == 0
    other = json.loads((tmp_path / "a.json").read_text())
    other["config_hash"] = "fedcba9876543210"
    (tmp_path / "b.json").write_text(json.dumps(other))
    res = runner.invoke(app, ["stats", "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert res.exit_code != 0 and "different VAEs" in res.stderr


def test_write_to_weights_round_trip(latent_dir, tmp_path):
    from pvvae_cli.models.registry import load_model

    root, zs = latent_dir
    weights = load_model("preset:tiny").save_pretrained(tmp_path / "w")
    res = runner.invoke(app, ["stats", str(root), "-o", str(tmp_path / "s.json"), "--write-to", str(weights)])
    assert res.exit_code == 0, res.output
    cfg = load_model(weights).config
    mean, std = reference(zs)
    assert_close(cfg.latents_mean, mean)
    assert_close(cfg.latents_std, std)
    # the folder now has another config hash: a second write (or another model's latents) is refused
    res = runner.invoke(app, ["stats", str(root), "--write-to", str(weights), "-q"])
    assert res.exit_code != 0 and "config hash" in res.stderr
    assert load_model(weights).config.latents_mean == cfg.latents_mean
