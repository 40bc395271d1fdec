"""``gen`` at dataset scale: the latent set held once (peak memory against the set's size on disk), batches
normalised as they are taken, cached epoch permutations, chunked sampling, the evaluation's bounded reference
subsample, and the evaluation hook that checks early and builds late."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from gen_helpers import SHAPE, write_latent_set

from pvvae_cli.gen.config import GenConfig
from pvvae_cli.gen.data import GenDataError, load_latent_set, normalize, shared_latent_set
from pvvae_cli.gen.model import LatteDiT

NUM_FILES = 20_000


def tiny(**fields) -> LatteDiT:
    base = dict(latent_channels=SHAPE[0], latent_frames=SHAPE[1], latent_height=SHAPE[2], latent_width=SHAPE[3])
    model = LatteDiT.from_preset("tiny", **{**base, **fields})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every weight random (the zero-initialised layers too), so every path is exercised
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def stats_config(data) -> GenConfig:
    mean, std = data.channel_stats()
    return GenConfig(latent_channels=SHAPE[0], latent_frames=SHAPE[1], latent_height=SHAPE[2], latent_width=SHAPE[3],
                     latents_mean=mean, latents_std=std)


@pytest.fixture(scope="session")
def big_set(tmp_path_factory):
    """``NUM_FILES`` latent files of ``SHAPE`` (2.3 KB of float32 each, ~3 KB with the header) in two class
    folders, written once per session by the project's writer with the metadata of ``gen_helpers``."""
    from pvvae_cli.codec.latents import load_latent, save_latent

    root = tmp_path_factory.mktemp("big") / "lat"
    first = write_latent_set(root, per_class=1)
    _, meta = load_latent(first[0])
    z = torch.randn((NUM_FILES - len(first), *SHAPE), generator=torch.Generator().manual_seed(0))
    for i in range(z.shape[0]):
        rel = f"{('left', 'right')[i % 2]}/x{i:05d}.safetensors"
        save_latent(root / rel, z[i], meta.replace(source=rel))
    return root


# The subprocess of the memory test. One-time costs that do not depend on the set (lazy imports, torch's kernel and
# thread-pool set-up: ~100 MB, all kept) are paid by a warm-up run on 4 clips; the baseline is taken after it, and
# the peak (VmHWM, reset through clear_refs) over the run on the large set. The warm-up leaves ~2 MB of freed heap
# that the measured run could reuse, so the figure is not flattered by more than that.
RSS_SCRIPT = r"""
import json, sys
import torch
from pvvae_cli.gen.train_config import GenTrainConfig
from pvvae_cli.gen.trainer import train_gen

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def cfg(data):
    return GenTrainConfig(data=data, class_from_folders=True, preset="tiny", steps=2, batch_size=4, log_every=1,
                          ckpt_every=100, device="cpu", precision="fp32")

small, big, out = sys.argv[1:4]
torch.set_num_threads(1)
train_gen(cfg(small), out + "/warm", quiet=True)
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM restarts from the current RSS
train_gen(cfg(big), out + "/big", quiet=True)
print(json.dumps({"base": base, "peak": status("VmHWM")}))
"""


def _can_reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="needs Linux /proc/self/clear_refs to measure peak RSS")
def test_training_on_20k_files_holds_the_set_about_once(big_set, tmp_path):
    """Before: the set was held as a list, a stack, a normalised copy and a float64 copy for the statistics: peak
    RSS 248 MiB over the baseline for this set of 58.4 MiB on disk (4.2x); with only the loading fixed and the
    trainer normalising the whole set, 166-174 MiB (2.9x). Now: one float32 tensor (44 MiB), statistics over
    chunks, batches normalised as they are taken: 87-94 MiB (1.5-1.6x; the rest is mostly the 20,000 ``Path``
    objects of ``LatentSet.files``)."""
    write_latent_set(tmp_path / "small", per_class=2)
    disk = sum(p.stat().st_size for p in big_set.rglob("*.safetensors"))
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "small"), str(big_set), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = rss["peak"] - rss["base"]
    figures = (f"{NUM_FILES} files, {disk / 2**20:.1f} MiB on disk; peak RSS {grown / 2**20:.1f} MiB over the "
               f"baseline ({grown / disk:.2f}x the set on disk)")
    print(figures)
    assert grown < 2 * disk, figures


def test_loading_reads_each_file_once_and_keeps_the_checks(tmp_path, monkeypatch):
    from pvvae_cli.codec import latents
    from pvvae_cli.codec.latents import load_latent, save_latent

    files = write_latent_set(tmp_path / "lat", per_class=2)
    calls = []
    monkeypatch.setattr("pvvae_cli.gen.data.load_latent", lambda p: calls.append(p) or latents.load_latent(p))
    data = load_latent_set(tmp_path / "lat")
    assert calls == []  # good files take the one-open path
    assert torch.equal(data.latents, torch.stack([load_latent(f)[0] for f in sorted(files)]))
    # a file with metadata that contradicts its tensor, and one that is not safetensors: load_latent's own errors
    z, meta = load_latent(files[0])
    save_latent(tmp_path / "lat" / "right" / "odd.safetensors", z, meta.replace(encoded_frames=13, num_frames=13))
    with pytest.raises(GenDataError, match=r"odd\.safetensors: invalid latent metadata: .*re-encode it"):
        load_latent_set(tmp_path / "lat")
    (tmp_path / "lat" / "right" / "odd.safetensors").write_bytes(b"not a latent file")
    with pytest.raises(GenDataError, match=r"odd\.safetensors: not a readable safetensors file"):
        load_latent_set(tmp_path / "lat")
    assert len(calls) == 2


def test_batch_is_normalise_then_index_exactly(tmp_path):
    write_latent_set(tmp_path / "lat", per_class=3)
    data = load_latent_set(tmp_path / "lat")
    config = stats_config(data)
    idx = torch.tensor([5, 0, 0, 3, 2])  # unsorted, with a repeat
    batch = data.batch(idx, config)
    assert batch.dtype == torch.float32 and batch.shape == (5, *SHAPE)
    assert torch.equal(batch, normalize(data.latents, config)[idx])


def test_channel_stats_over_chunks_match_one_float64_pass(tmp_path, monkeypatch):
    write_latent_set(tmp_path / "lat", per_class=3)
    data = load_latent_set(tmp_path / "lat")
    z = data.latents.double().transpose(0, 1).flatten(1)  # the former computation: the whole set in float64
    want_mean, want_std = z.mean(1), z.std(1, unbiased=False)
    monkeypatch.setattr("pvvae_cli.gen.data.STATS_CHUNK_ELEMENTS", 2 * data.latents[0].numel())  # 3 chunks
    mean, std = data.channel_stats()
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), want_mean, rtol=0, atol=1e-14)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), want_std, rtol=1e-12, atol=0)


def _old_indices(n: int, position: int, count: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """``LatentSet.indices`` as it was, drawing the permutation again at every call."""
    out, cache = [], {}
    for j in range(count):
        epoch, k = divmod((position + j) * world + rank, n)
        if epoch not in cache:
            cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(cache[epoch][k]))
    return torch.tensor(out, dtype=torch.long)


def test_cached_permutations_give_the_same_indices(tmp_path, monkeypatch):
    write_latent_set(tmp_path / "lat", per_class=5)
    data = load_latent_set(tmp_path / "lat")
    n = len(data)
    draws = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: draws.append(a) or randperm(*a, **k))
    cases = [(position, count, seed, rank, world) for seed in (0, 3) for world, rank in ((1, 0), (2, 0), (2, 1), (3, 2))
             for count in (1, 4, 7) for position in range(0, 40, 3)]
    for position, count, seed, rank, world in cases:
        got = data.indices(position, count, seed, rank, world)
        assert torch.equal(got, _old_indices(n, position, count, seed, rank, world)), (position, count, seed, world)
    # a training run: steps move forward, so each epoch's permutation is drawn once
    draws.clear()
    for step in range(50):
        data.indices(step * 4, 4, seed=1)
    assert n == 10 and len(draws) == 50 * 4 // n
    assert len(data._perms) <= 2


def test_chunked_sampling_equals_one_batch(tmp_path, one_thread):
    from pvvae_cli.gen.generate import generate, sample_latents
    from pvvae_cli.gen.sampler import initial_noise

    # each sample's starting noise is its own: exactly the same whatever the batches
    whole = initial_noise((7, *SHAPE), seed=5)
    assert torch.equal(torch.cat([initial_noise((3, *SHAPE), 5), initial_noise((4, *SHAPE), 5, start=3)]), whole)
    model = tiny(num_classes=3, latents_mean=(0.5,) * 8, latents_std=(2.0,) * 8)
    one, labels = sample_latents(model, 7, None, cfg_scale=2.0, steps=3, seed=5, batch_size=7)
    assert labels == [0, 1, 2, 0, 1, 2, 0]
    for batch_size in (1, 3, 16):
        chunked, chunk_labels = sample_latents(model, 7, None, cfg_scale=2.0, steps=3, seed=5, batch_size=batch_size)
        assert chunk_labels == labels
        # the same noise and labels; the model's matmuls round differently at another batch size (BLAS chooses
        # its kernels by size), hence float32 rounding, not bit identity
        assert torch.allclose(chunked, one, rtol=0, atol=1e-5), batch_size
    again, _ = sample_latents(model, 7, None, cfg_scale=2.0, steps=3, seed=5, batch_size=16)
    assert torch.equal(again, chunked)  # the same seed and batches: bit for bit
    out = generate(model, tmp_path / "s", 5, cfg_scale=2.0, steps=3, seed=5, decode=False, batch_size=2)
    assert [p.name for p in out.latent_files] == [f"sample_{i:04d}.safetensors" for i in range(5)]
    assert torch.allclose(out.latents, one[:5], rtol=0, atol=1e-5) and out.labels == labels[:5]
    from pvvae_cli.gen.generate import GenSampleError

    with pytest.raises(GenSampleError, match="--batch-size"):
        generate(model, tmp_path / "t", 2, steps=1, decode=False, batch_size=0)


def test_evaluation_reference_is_a_fixed_bounded_subsample(tmp_path, one_thread):
    from pvvae_cli.gen.evaluation import MAX_REFERENCE, reference_indices, sample_statistics

    ref = reference_indices(50_000, 1000, seed=3)
    assert torch.equal(ref, reference_indices(50_000, 1000, seed=3))  # the same clips at every evaluation
    assert len(ref) == 1000 and len(ref.unique()) == 1000 and torch.equal(ref, ref.sort().values)
    assert 0 <= int(ref.min()) and int(ref.max()) < 50_000 and not torch.equal(ref, reference_indices(50_000, 1000, 4))
    assert torch.equal(reference_indices(7, 1000), torch.arange(7)) and MAX_REFERENCE == 10_000

    write_latent_set(tmp_path / "lat", per_class=4)
    data = load_latent_set(tmp_path / "lat", class_from_folders=True)
    model = tiny(num_classes=2, latents_mean=stats_config(data).latents_mean,
                 latents_std=stats_config(data).latents_std)
    got = sample_statistics(model, data, data.labels, num=3, steps=2, seed=1, max_reference=5)
    assert got["reference_clips"] == 5.0
    assert got == sample_statistics(model, data, data.labels, num=3, steps=2, seed=1, max_reference=5)
    # the same numbers as the normalised subsample passed as a tensor (the former interface), all of it used
    sub = reference_indices(len(data), 5, seed=1)
    x = normalize(data.latents, model.config)[sub]
    assert got == sample_statistics(model, x, data.labels[sub], num=3, steps=2, seed=1)
    # the distance pass in chunks of 2 clips gives the nearest clips of one pass
    import pvvae_cli.gen.evaluation as evaluation

    whole = sample_statistics(model, data, data.labels, num=3, steps=2, seed=1)
    evaluation.CHUNK_ELEMENTS, saved = 2 * data.latents[0].numel(), evaluation.CHUNK_ELEMENTS
    try:
        chunked = sample_statistics(model, data, data.labels, num=3, steps=2, seed=1)
    finally:
        evaluation.CHUNK_ELEMENTS = saved
    assert chunked.keys() == whole.keys() and chunked["nn_class_acc"] == whole["nn_class_acc"]
    assert all(abs(chunked[k] - whole[k]) < 1e-5 for k in whole)


def test_eval_hook_checks_early_and_builds_late(tmp_path, monkeypatch, one_thread):
    from pvvae_cli.codec.latents import load_latent, save_latent
    from pvvae_cli.gen.evaluation import LazyHook
    from pvvae_cli.gen.train_config import GenTrainConfig
    from pvvae_cli.gen.video_eval import GenEvalError, training_eval_hook, vae_config_hash
    from pvvae_cli.metrics.perceptual import MetricUnavailable
    from pvvae_cli.models.registry import load_model

    files = write_latent_set(tmp_path / "lat", per_class=2)
    cfg = GenTrainConfig(data=str(tmp_path / "lat"), class_from_folders=True, preset="tiny", device="cpu")
    # the cheap VAE check reads configs only, and agrees with loading the model
    from pvvae_cli.codec.latents import config_hash

    assert vae_config_hash("preset:tiny") == config_hash(load_model("preset:tiny").config)
    monkeypatch.delenv("PVVAE_I3D", raising=False)
    with pytest.raises(MetricUnavailable, match="does not exist"):
        training_eval_hook(cfg, 2, 2, [tmp_path], tmp_path / "no_i3d.safetensors")
    z, meta = load_latent(files[0])
    for f in files:
        save_latent(f, load_latent(f)[0], meta.replace(config_hash="0" * 16))
    with pytest.raises(GenEvalError, match="not the VAE that encoded"):
        training_eval_hook(cfg, 2, 2, [tmp_path], tmp_path / "no_i3d.safetensors")

    # without a reference: nothing is read until the first call, which uses the set this process holds
    hook = training_eval_hook(cfg, 2, 2)
    assert isinstance(hook, LazyHook) and hook.hook is None
    held = load_latent_set(cfg.data, cfg.labels, cfg.class_from_folders)  # as the trainer does
    assert shared_latent_set(cfg.data, None, True) is held
    monkeypatch.setattr("pvvae_cli.gen.data.load_latent_set", lambda *a, **k: pytest.fail("read the set again"))
    model = tiny(num_classes=2, latents_mean=stats_config(held).latents_mean,
                 latents_std=stats_config(held).latents_std)
    state = torch.get_rng_state()
    first = hook(model, 0)
    assert torch.equal(torch.get_rng_state(), state)  # building and evaluating leave the global RNG alone
    assert first["reference_clips"] == 4.0 and first == hook(model, 1)


def test_cli_sample_in_batches(tmp_path, one_thread):
    """``gen sample --batch-size``: the same samples as the library in one batch (up to float32 rounding), with the
    default precision (auto: fp32 on the CPU)."""
    from conftest import run_pvvae
    from safetensors.torch import load_file

    from pvvae_cli.gen.generate import sample_latents
    from pvvae_cli.gen.weights import save_gen

    model = tiny(num_classes=2, class_names=("left", "right"), latents_mean=(0.1,) * 8, latents_std=(1.5,) * 8)
    save_gen(model, tmp_path / "w")
    out = run_pvvae("gen", "sample", tmp_path / "w", "-o", tmp_path / "s", "--num", "3", "--steps", "2", "--seed",
                    "4", "--cfg-scale", "2", "--batch-size", "2", "--no-decode", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    want, _ = sample_latents(model, 3, None, cfg_scale=2.0, steps=2, seed=4, batch_size=3)
    # (read as plain safetensors: this model records no VAE geometry, which pvvae decode would need)
    got = torch.stack([load_file(tmp_path / "s" / f"sample_{i:04d}.safetensors")["latent"] for i in range(3)])
    assert torch.allclose(got, want, rtol=0, atol=1e-5)
    out = run_pvvae("gen", "sample", tmp_path / "w", "-o", tmp_path / "t", "--batch-size", "0", "--no-decode")
    assert out.returncode == 2 and "--batch-size must be >= 1" in out.stderr
