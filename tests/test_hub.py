"""Hub repo ids as ``--model``: download, cache, revision pinning, offline use and one-line errors, against a local
stand-in for the hub (``hub_server.FakeHub``), never the real one.

``huggingface_hub`` reads ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` when it is imported; pvvae reads
them again when it resolves a model, so the library tests pass ``endpoint=``/``cache_dir=``/``offline=``, the CLI
tests set the environment in-process, and one test runs the installed command with the environment of a user.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest
import torch
from conftest import tiny_train_config
from hub_server import FakeHub
from typer.testing import CliRunner

from pvvae_cli import VideoVAE, load_model
from pvvae_cli.cli.app import app
from pvvae_cli.codec.latents import load_latent
from pvvae_cli.media.video_io import probe
from pvvae_cli.media.writer import write_video
from pvvae_cli.models import hub as hub_lib
from pvvae_cli.models.hub import HubError, HubRef, parse_hub_ref
from pvvae_cli.models.weights import WeightsError
from pvvae_cli.train.build import build_vae

REPO = "org/tiny-vae"
runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two different sets of tiny weights (folders ``v1``, ``v2``, with model cards), as ``save_pretrained``
    writes them."""
    root = tmp_path_factory.mktemp("weights")
    for seed, name in enumerate(("v1", "v2")):
        torch.manual_seed(seed)
        VideoVAE.from_preset("tiny").save_pretrained(root / name, model_card=f"# tiny {name}\n")
    return {name: root / name for name in ("v1", "v2")}


def repo_files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def hub(weights):
    """``REPO`` with commit ``v1`` (plus a file pvvae must not fetch), then ``v2``; ``main`` points at ``v2``."""
    fake = FakeHub()
    fake.add_commit(REPO, {**repo_files(weights["v1"]), "notes.bin": b"0" * 4096}, refs=("main", "v1"))
    fake.add_commit(REPO, repo_files(weights["v2"]), refs=("main", "v2"))
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def closed_port_url():
    """The address of a port nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch):
    """The environment a user sets for the CLI: this hub, a fresh cache, online."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub


def fetch(fake, spec, cache, **kw):
    return hub_lib.download(spec, cache_dir=cache, endpoint=fake.url, offline=kw.pop("offline", False), **kw)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_parse_hub_ref():
    assert parse_hub_ref("org/name") == HubRef("org/name", None)
    assert parse_hub_ref("org/n.a-m_e@v1.0") == HubRef("org/n.a-m_e", "v1.0")
    assert parse_hub_ref("org/name@refs/pr/1") == HubRef("org/name", "refs/pr/1")
    assert parse_hub_ref("org/name", "main") == parse_hub_ref("org/name@main", "main") == HubRef("org/name", "main")
    assert str(HubRef("org/name", "v1")) == "org/name@v1"
    with pytest.raises(HubError, match="names revision 'a' but revision 'b' was also given"):
        parse_hub_ref("org/name@a", "b")
    for bad in ("org", "a/b/c", "./x/y", "/abs/path", "org/name@", "org/../x", "org/na me", "-org/name"):
        with pytest.raises(HubError, match="not a local weights folder, nor a hub repo id"):
            parse_hub_ref(bad)


def test_download_fetches_the_weights_files_at_one_commit(hub, weights, tmp_path):
    snap = fetch(hub, f"{REPO}@v1", tmp_path / "cache")
    sha = hub.sha(REPO, "v1")
    assert snap.commit == sha and snap.directory.name == sha and snap.label == f"{REPO}@v1 (commit {sha[:7]})"
    assert repo_files(snap.directory) == repo_files(weights["v1"])  # config, weights, card; not notes.bin
    resolved = [path for method, path in hub.requests if "/resolve/" in path]
    assert resolved and all(f"/resolve/{sha}/" in path for path in resolved)  # every file from the probed commit
    assert not any("notes.bin" in path for path in resolved)


def test_revisions_pin_different_weights(hub_env, weights):
    v1, v2 = VideoVAE.from_pretrained(weights["v1"]), VideoVAE.from_pretrained(weights["v2"])
    assert not same_weights(v1, v2)
    assert same_weights(load_model(f"{REPO}@v1"), v1)
    assert same_weights(load_model(f"{REPO}@{hub_env.sha(REPO, 'v1')}"), v1)  # a commit
    assert same_weights(load_model(REPO), v2)  # the default branch
    assert same_weights(load_model(REPO, revision="v1"), v1)
    assert same_weights(VideoVAE.from_pretrained(f"{REPO}@v2"), v2)
    trainee = build_vae(tiny_train_config(init=f"{REPO}@v1", preset=None))  # `pvvae train --init org/name@rev`
    assert same_weights(trainee.encoder, v1.encoder)


def test_offline_reads_the_cache_without_a_request(hub, tmp_path):
    cache = tmp_path / "cache"
    for spec in (f"{REPO}@v1", REPO):
        fetch(hub, spec, cache)
    hub.stop()
    hub.requests.clear()
    v1, v2 = hub.sha(REPO, "v1"), hub.sha(REPO, "v2")
    assert fetch(hub, f"{REPO}@v1", cache, offline=True).commit == v1
    assert fetch(hub, f"{REPO}@{v1}", cache, offline=True).commit == v1
    assert fetch(hub, REPO, cache, offline=True).commit == v2  # main, as it was when downloaded
    with pytest.raises(HubError, match=r"org/tiny-vae@v2: not \(completely\) in the hub cache .* HF_HUB_OFFLINE is set;"
                                       r" download it once online with `pvvae download org/tiny-vae@v2`"):
        fetch(hub, f"{REPO}@v2", cache, offline=True)  # v2 was only fetched as main: no ref v2 in the cache
    assert hub.requests == []


def test_a_cached_commit_needs_no_request(hub, tmp_path):
    spec = f"{REPO}@{hub.sha(REPO, 'v1')}"
    fetch(hub, spec, tmp_path / "cache")
    hub.requests.clear()
    assert fetch(hub, spec, tmp_path / "cache").commit == hub.sha(REPO, "v1")
    assert hub.requests == []


def test_unreachable_hub_fails_fast_or_falls_back_to_the_cache(hub, tmp_path, closed_port_url):
    cache = tmp_path / "cache"
    fetch(hub, f"{REPO}@v1", cache)
    cached = hub_lib.download(f"{REPO}@v1", cache_dir=cache, endpoint=closed_port_url, offline=False)
    assert cached.commit == hub.sha(REPO, "v1")
    # A commit revision: huggingface_hub alone retries its tree listing with back-off (~23 s measured); one probe.
    for spec in (f"{REPO}@v2", f"{REPO}@{hub.sha(REPO, 'v2')}", "org/other"):
        start = time.perf_counter()
        with pytest.raises(HubError) as err:
            hub_lib.download(spec, cache_dir=cache, endpoint=closed_port_url, offline=False)
        assert time.perf_counter() - start < 5
        message = str(err.value)
        assert "\n" not in message and f"{spec}: not (completely) in the hub cache" in message
        assert f"the hub at {closed_port_url} is unreachable" in message and f"`pvvae download {spec}`" in message


def test_hub_down_falls_back_to_the_cache(hub, tmp_path):
    fetch(hub, f"{REPO}@v1", tmp_path / "cache")
    hub.status = 503
    assert fetch(hub, f"{REPO}@v1", tmp_path / "cache").commit == hub.sha(REPO, "v1")
    with pytest.raises(HubError, match=r"is down \(HTTP 503\)"):
        fetch(hub, f"{REPO}@v2", tmp_path / "cache")


@pytest.mark.parametrize("case", ["no repo", "no revision", "no weights file", "unservable file", "bad json",
                                  "unknown class"])
def test_each_failure_is_one_line_naming_the_repo(case, hub, weights, tmp_path):
    good = repo_files(weights["v1"])
    spec, expected = {
        "no repo": ("org/missing", "org/missing: no such model repo on http://127.0.0.1"),
        "no revision": (f"{REPO}@v9", f"{REPO}@v9: the repo has no revision 'v9'"),
        "no weights file": ("org/no-weights", "org/no-weights (commit {sha}): the repo has no model.safetensors"),
        "unservable file": ("org/unservable", "org/unservable: the hub failed to serve a file (404"),
        "bad json": ("org/bad-json", "org/bad-json (commit {sha}): config.json: not valid JSON"),
        "unknown class": ("org/other-family", "org/other-family (commit {sha}): config.json: class_name is 'Nope'"),
    }[case]
    hub.add_commit("org/no-weights", {k: v for k, v in good.items() if k != "model.safetensors"})
    hub.add_commit("org/unservable", good)
    hub.unservable.add(("org/unservable", "model.safetensors"))
    hub.add_commit("org/bad-json", {**good, "config.json": b"{not json"})
    hub.add_commit("org/other-family", {**good, "config.json": good["config.json"].replace(b'"VideoVAE"', b'"Nope"')})
    with pytest.raises(WeightsError) as err:
        fetch(hub, spec, tmp_path / "cache")
    message = str(err.value)
    sha = hub.sha(spec.split("@")[0], "main")[:7] if spec.split("@")[0] in hub.repos else ""
    assert expected.format(sha=sha) in message and "\n" not in message, message


def test_encode_and_decode_with_a_hub_model(hub_env, weights, tmp_path):
    import numpy as np

    frames = np.full((5, 64, 64, 3), 40, dtype=np.uint8)
    for i in range(5):
        frames[i, 8:20, 4 + 4 * i : 16 + 4 * i] = 220  # a square moving right
    write_video(tmp_path / "clip.mp4", frames, fps=8)

    def encode(model, out):
        res = runner.invoke(app, ["encode", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / out), "--model", model,
                                  "-q"])
        assert res.exit_code == 0, res.output
        return load_latent(tmp_path / out / "clip.safetensors")

    z_hub, meta = encode(f"{REPO}@v1", "lat-hub")
    z_local, _ = encode(str(weights["v1"]), "lat-local")
    z_v2, _ = encode(f"{REPO}@v2", "lat-v2")
    assert meta.model == f"{REPO}@v1"  # the latents name the pinned revision ...
    assert torch.equal(z_hub, z_local) and not torch.equal(z_hub, z_v2)
    res = runner.invoke(app, ["decode", str(tmp_path / "lat-hub"), "-o", str(tmp_path / "rec"), "-q"])
    assert res.exit_code == 0, res.output  # ... which decode loads again
    info = probe(tmp_path / "rec" / "clip.mp4")
    assert (info.num_frames, info.height, info.width) == (5, 64, 64)


def test_download_command(hub_env, weights, tmp_path):
    res = runner.invoke(app, ["download", REPO, "--revision", "v1", "--local-dir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str((tmp_path / "w").resolve())
    for name, data in repo_files(weights["v1"]).items():
        assert (tmp_path / "w" / name).read_bytes() == data
    assert same_weights(load_model(tmp_path / "w"), VideoVAE.from_pretrained(weights["v1"]))
    res = runner.invoke(app, ["download", f"{REPO}@v2"])
    assert res.exit_code == 0 and res.stdout.strip().endswith(hub_env.sha(REPO, "v2"))  # the cache's snapshot
    for args in (["download", "org/missing"], ["download", f"{REPO}@v1", "--revision", "v2"],
                 ["encode", str(tmp_path), "-o", str(tmp_path / "lat"), "--model", "org/missing"],
                 ["info", f"{REPO}@v9"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "Traceback" not in res.output, args
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: org/"), (args, res.output)
    res = runner.invoke(app, ["info", "runs/missing"])  # a mistyped folder, or a repo?
    assert res.exit_code == 2 and res.output.strip().startswith("error: runs/missing: no such model repo on ")
    assert res.output.strip().endswith("(and there is no local folder runs/missing)")


def test_installed_command_reads_the_users_environment(hub, tmp_path, closed_port_url):
    exe = shutil.which("pvvae")
    assert exe, "the console command `pvvae` is not installed (pip install -e .)"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache")}
    env.pop("HF_HUB_OFFLINE", None)

    def pvvae(*args, **changes):
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env={**env, **changes})

    out = pvvae("download", f"{REPO}@v1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "cache" / "models--org--tiny-vae" / "snapshots" / hub.sha(REPO, "v1"))
    hub.stop()
    out = pvvae("info", f"{REPO}@v1", HF_HUB_OFFLINE="1")
    assert out.returncode == 0 and f"model: {REPO}@v1" in out.stdout, out.stderr
    out = pvvae("info", f"{REPO}@{'0' * 40}", HF_ENDPOINT=closed_port_url)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {REPO}@{'0' * 40}: not (completely) in the hub cache ({tmp_path / 'cache'}) "
                           f"and the hub at {closed_port_url} is unreachable (")
