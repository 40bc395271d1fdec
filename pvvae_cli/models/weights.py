"""The weights folder format: ``config.json`` + ``model.safetensors`` (+ ``README.md`` model card).

``config.json`` holds ``class_name`` (the family, see ``registry``), ``format_version`` and every field of the
family's config (latent statistics included); a ``config.json`` without ``class_name`` is read as PV-VAE (the only
family before the registry). Loading is strict and uses safetensors only: no pickle is ever unpickled. This module
imports no model: the registry names the class to build.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pvvae_cli import __version__
from pvvae_cli.errors import PvvaeError
from pvvae_cli.models import registry
from pvvae_cli.runtime.atomic import atomic_path

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
# A diffusers model folder, possibly the vae/ subfolder of a pipeline (read by the family's foreign loader).
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PIPELINE_SUBFOLDER = "vae"


class WeightsError(PvvaeError, ValueError):
    """A weights folder or repo that cannot be loaded; the message names the file and the problem."""


def config_to_json(config, release: dict | None = None) -> dict:
    """``config.json``'s content for a config of any registered family. ``release``: the name and version of a
    published model (``{"name": ..., "version": ...}``), kept beside the config (not part of it or its hash)."""
    meta = {"release": release} if release else {}
    return {"class_name": registry.family_of(config).class_name, "format_version": FORMAT_VERSION,
            "pvvae_version": __version__, **meta, **config.to_dict()}


def save_pretrained(model, directory: str | Path, model_card: str | None = None, dtype: torch.dtype | None = None,
                    release: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed); each file is written atomically. ``dtype``: store the
    floating-point tensors at this precision (e.g. ``torch.float16``, half the file; loading computes in fp32)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype)
               .contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "pvvae_format_version": str(FORMAT_VERSION)})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config_to_json(model.config, release), indent=2) + "\n")
    if model_card is not None:
        with atomic_path(directory / CARD_NAME) as tmp:
            tmp.write_text(model_card)
    return directory


def read_config(path: Path, label: str | None = None):
    """Parse and validate a ``config.json``: an instance of its family's config class. ``label``: how messages name
    the folder (a hub repo's ``owner/name@rev (commit ...)``) instead of its path."""
    where = f"{label}: {path.name}" if label else str(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise WeightsError(f"{where}: missing; a weights folder needs {CONFIG_NAME} and {WEIGHTS_NAME}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise WeightsError(f"{where}: expected a JSON object")
    cls = raw.pop("class_name", registry.DEFAULT_CLASS_NAME)
    if cls not in registry.FAMILIES:
        raise WeightsError(f"{where}: class_name is {cls!r}, expected one of {sorted(registry.FAMILIES)}")
    version = raw.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{where}: format_version {version!r} is not supported (this pvvae reads {FORMAT_VERSION}); "
            "upgrade pvvae or re-export the weights"
        )
    raw.pop("pvvae_version", None)
    release = raw.pop("release", None)
    if release is not None and not (isinstance(release, dict) and isinstance(release.get("name"), str)
                                    and isinstance(release.get("version"), str)):
        raise WeightsError(f"{where}: release must be {{\"name\": ..., \"version\": ...}}, got {release!r}")
    try:
        return registry.get_family(cls).config_class.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{where}: invalid config: {e}") from e


def resolve_weights_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local weights folder as is; otherwise a hub repo id ``owner/name[@revision]`` (``revision`` may be given
    apart), downloaded into the hub cache or found there (``models/hub.py``)."""
    return _locate(name_or_path, revision)[0]


def _locate(name_or_path: str | Path, revision: str | None) -> tuple[Path, str | None]:
    """The one resolver of every ``--model`` / ``--init``: ``(folder, label)``; ``label`` names a hub snapshot in
    messages (``None`` for a local folder, whose path says it)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise WeightsError(f"{path}: is a file; pass the weights folder that holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                           f"(single files: {sorted(_foreign_file_suffixes())})")
    from pvvae_cli.models import hub

    text = str(name_or_path)
    if not hub.looks_like_hub_ref(text):
        raise WeightsError(f"{text}: no such weights folder, and not a hub repo id of the form owner/name[@revision]")
    try:
        snapshot = hub.download(hub.parse_hub_ref(text, revision))
    except hub.HubError as e:
        if "@" in text:  # owner/name@rev is clearly meant for the hub; a bare a/b may be a mistyped folder
            raise
        raise hub.HubError(f"{e} (and there is no local folder {path})") from e
    return snapshot.directory, snapshot.label


def load_pretrained(
    name_or_path: str | Path, revision: str | None = None, device: str | torch.device = "cpu",
    expect: type | None = None,
):
    """Build the model of a weights folder or hub repo id (its family from ``class_name``), in eval mode; strict
    about every tensor. ``expect``: a class the model must be an instance of (``VideoVAE.from_pretrained``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file() and (path.parent / CONFIG_NAME).is_file():
        raise WeightsError(f"{path}: is a file of a weights folder; pass the folder {path.parent}")
    if path.is_file() and path.suffix in _foreign_file_suffixes():
        return _load_foreign(path, _foreign_families(), device, expect)
    directory, label = _locate(name_or_path, revision)
    if not (directory / CONFIG_NAME).is_file() and (directory / PIPELINE_SUBFOLDER / CONFIG_NAME).is_file():
        directory = directory / PIPELINE_SUBFOLDER  # a diffusers pipeline: its VAE
    foreign_class = _diffusers_class(directory / CONFIG_NAME)
    if foreign_class is not None:
        families = [f for f in registry.FAMILIES.values() if f.diffusers_class == foreign_class and f.foreign]
        if not families:
            raise WeightsError(f"{directory / CONFIG_NAME}: diffusers class {foreign_class!r} is not supported; "
                               f"supported: {sorted(f.diffusers_class for f in _foreign_families())}")
        return _load_foreign(directory, families, device, expect)
    config = read_config(directory / CONFIG_NAME, label)
    model_class = registry.family_of(config).model_class
    config_where = f"{label}: {CONFIG_NAME}" if label else directory / CONFIG_NAME
    if expect is not None and not issubclass(model_class, expect):
        raise WeightsError(f"{config_where}: holds a {model_class.__name__}, not a {expect.__name__}; "
                           "load it with pvvae_cli.load_model")
    weights_path = directory / WEIGHTS_NAME
    where = f"{label}: {WEIGHTS_NAME}" if label else weights_path
    if not weights_path.is_file():
        raise WeightsError(f"{where}: missing; a weights folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    tensors = read_safetensors(weights_path, device)
    with torch.device("meta"):  # no memory and no init: every tensor comes from the file
        model = model_class(config)
    check_tensors(where, {k: tuple(v.shape) for k, v in model.state_dict().items()}, tensors,
                  "does not match its config.json")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


# Single checkpoint files that a family's foreign loader reads (Wan's original .pth, a .safetensors of it).
_FOREIGN_SUFFIXES = (".pth", ".pt", ".safetensors")


def _foreign_file_suffixes() -> tuple[str, ...]:
    return _FOREIGN_SUFFIXES if _foreign_families() else ()


def _foreign_families() -> list[registry.Family]:
    return [f for f in registry.FAMILIES.values() if f.foreign]


def _diffusers_class(path: Path) -> str | None:
    """``_class_name`` of a diffusers ``config.json`` (None for pvvae's own, or when unreadable: ``read_config``
    then reports the problem)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return raw.get("_class_name") if isinstance(raw, dict) and "_class_name" in raw else None


def _load_foreign(path: Path, families: list[registry.Family], device, expect: type | None):
    """The model read by the first of ``families`` whose foreign loader accepts ``path``."""
    family = families[0]  # one family per diffusers class; single files: today only Wan reads them
    if expect is not None and not issubclass(family.model_class, expect):
        raise WeightsError(f"{path}: holds a {family.model_class.__name__}, not a {expect.__name__}; "
                           "load it with pvvae_cli.load_model")
    return family.foreign_loader(path, device).eval()


def read_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, ``WeightsError`` if unreadable.

    The file is opened once per tensor: a tensor read from an open file is a copy, but the file stays mapped
    while open and every page read counts in the process's resident memory, so one open for the whole file
    doubles peak memory whenever the caller then converts the tensors (measured: a 2.7 GiB Wan2.2 VAE converted
    to channels-last peaked at 5.2 GiB with one open, 2.8 GiB with one per tensor)."""
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            names = list(f.keys())
        tensors = {}
        for name in names:
            with safe_open(path, framework="pt", device=str(device)) as f:
                tensors[name] = f.get_tensor(name)
        return tensors
    except (SafetensorError, OSError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e


def check_tensors(source: Path, expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor],
                  what: str = "does not match the model") -> None:
    """Raise ``WeightsError`` naming ``source`` unless ``tensors`` has exactly the ``expected`` names and shapes."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k])}"
                 for k in sorted(set(expected) & set(tensors)) if tuple(tensors[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing tensors {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_clip(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped tensors {_clip(misshaped)}")
    if problems:
        raise WeightsError(f"{source}: {what} ({'; '.join(problems)})")


def _clip(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
