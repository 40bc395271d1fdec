"""Weights folders on the Hugging Face Hub: ``owner/name[@revision]`` -> a local folder of ``config.json`` +
``model.safetensors`` (+ ``README.md``), downloaded once into the hub cache and read from there afterwards.

- **Pinned**: ``@revision`` is a branch, a tag or a 40-hex commit; a commit never changes, so a cached one is used
  without asking the hub at all.
- **Offline**: with ``HF_HUB_OFFLINE=1`` (or an unreachable hub) the cached snapshot of the revision is used; a
  branch or tag is looked up in the cache's ``refs/``.
- **Fails fast, in one line**: the hub is first asked which commit the revision names (one request, no retries).
  ``huggingface_hub`` retries some requests on connection errors with back-off (measured with 2.4.0: a commit
  revision against an unreachable endpoint took ~23.6 s to fail in its tree listing); the probe turns that into one
  failed request (~0.4 s for a refused connection or an unknown host), then the cache is tried.

The environment is read when a model is resolved, not when ``huggingface_hub`` is imported (which is when it
reads it): ``HF_ENDPOINT`` (the hub's address), ``HF_HUB_CACHE`` (the cache folder; default
``~/.cache/huggingface/hub``) and ``HF_HUB_OFFLINE``. ``HF_TOKEN`` (private repos) is left to ``huggingface_hub``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pvvae_cli.models.weights import (
    CARD_NAME,
    CONFIG_NAME,
    DIFFUSERS_WEIGHTS_NAME,
    PIPELINE_SUBFOLDER,
    WEIGHTS_NAME,
    WeightsError,
    read_config,
)

REPO_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME,
              # a diffusers VAE repo (e.g. AutoencoderKLWan), or a pipeline repo with it in vae/
              DIFFUSERS_WEIGHTS_NAME, f"{PIPELINE_SUBFOLDER}/{CONFIG_NAME}",
              f"{PIPELINE_SUBFOLDER}/{DIFFUSERS_WEIGHTS_NAME}")


def _layout_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a pvvae weights folder or a diffusers VAE (at the root or in ``vae/``)."""
    return any(all((folder / sub / name).is_file() for name in names)
               for sub, names in ((".", (CONFIG_NAME, WEIGHTS_NAME)), (".", (CONFIG_NAME, DIFFUSERS_WEIGHTS_NAME)),
                                  (PIPELINE_SUBFOLDER, (CONFIG_NAME, DIFFUSERS_WEIGHTS_NAME))))
# A repo id as the hub spells them: two parts of letters, digits, '-', '_' and '.', neither starting with '.' or
# '-'; optional '@revision' (anything but '@' and whitespace: branches may contain '/', e.g. refs/pr/1).
_HUB_REF = re.compile(r"(?P<repo>[A-Za-z0-9_][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95})(?:@(?P<rev>[^@\s]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Seconds the revision probe waits for the hub to answer; a stalled connection fails after this, once.
PROBE_TIMEOUT_S = 10.0


class HubError(WeightsError):
    """A hub repo that cannot be had or is not a pvvae weights repo; one line naming the repo and the fix."""


@dataclass(frozen=True)
class HubRef:
    """A model repo on the hub and the revision asked for (``None``: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class HubSnapshot:
    """A downloaded (or cached) revision: ``directory`` holds its files; ``commit`` is the 40-hex commit it was
    read at (``None`` only for an offline ``local_dir`` copy, whose commit is not recorded)."""

    ref: HubRef
    directory: Path
    commit: str | None

    @property
    def label(self) -> str:
        """How messages name it: ``owner/name@rev (commit 0123abc)``."""
        return f"{self.ref} (commit {self.commit[:7]})" if self.commit else str(self.ref)


def parse_hub_ref(text: str, revision: str | None = None) -> HubRef:
    """``owner/name`` or ``owner/name@revision`` -> ``HubRef``; ``revision`` (e.g. ``download --revision``) may
    repeat the ``@revision`` but not contradict it. ``HubError`` for anything else."""
    match = _HUB_REF.fullmatch(text.strip())
    if match is None or ".." in match["repo"]:
        raise HubError(f"{text}: not a local weights folder, nor a hub repo id of the form owner/name[@revision]")
    rev = match["rev"]
    if revision is not None and rev is not None and revision != rev:
        raise HubError(f"{text}: names revision {rev!r} but revision {revision!r} was also given; give one")
    return HubRef(match["repo"], rev if rev is not None else revision)


def looks_like_hub_ref(text: str) -> bool:
    return _HUB_REF.fullmatch(text.strip()) is not None and ".." not in text


def _env_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or bool(constants.HF_HUB_OFFLINE)


def download(
    ref: HubRef | str,
    local_dir: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    offline: bool | None = None,
) -> HubSnapshot:
    """Download (or find in the cache) the weights files of ``ref`` and check they form a pvvae weights folder.

    ``local_dir``: also place the files there (a plain weights folder; ``huggingface_hub`` keeps its bookkeeping
    in ``local_dir/.cache``). ``cache_dir`` / ``endpoint`` / ``offline`` default to ``HF_HUB_CACHE`` /
    ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` as set now. Only ``config.json``, ``model.safetensors`` and ``README.md``
    are fetched, whatever else the repo holds; ``config.json`` is validated. Raises ``HubError`` (``WeightsError``
    for a bad ``config.json``) with one line for every failure."""
    ref = parse_hub_ref(ref) if isinstance(ref, str) else ref
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    offline = _env_offline() if offline is None else offline

    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError  # .utils: in every version

    # Which copy to read: the hub's (reachable, commit known) or the cache's (why_cache says why).
    cached_commit = (not offline and local_dir is None and ref.revision is not None
                     and _COMMIT.fullmatch(ref.revision) is not None and _cached_commit(ref, cache_dir))
    if offline:
        commit, why_cache = None, "HF_HUB_OFFLINE is set"
    elif cached_commit:
        commit, why_cache = ref.revision, None  # a commit never changes: its complete cached copy needs no request
    else:
        commit, why_cache = _probe(ref, endpoint)
    try:
        folder = snapshot_download(
            ref.repo_id, revision=ref.revision, cache_dir=cache_dir, local_dir=local_dir, endpoint=endpoint,
            allow_patterns=list(REPO_FILES), local_files_only=cached_commit or why_cache is not None,
        )
    except LocalEntryNotFoundError as e:  # also IncompleteSnapshotError: a partial copy in the cache
        where = f"in {local_dir}" if local_dir is not None else f"in the hub cache ({_cache_name(cache_dir)})"
        raise HubError(f"{ref}: not (completely) {where} and {why_cache or 'the hub could not be reached'}; "
                       f"download it once online with `pvvae download {ref}`, or pass a local weights folder") from e
    except HfHubHTTPError as e:  # the revision resolved, but a file could not be fetched (EntryNotFound, 5xx, ...)
        raise HubError(f"{ref}: the hub failed to serve a file ({_first_line(e)})") from e
    except OSError as e:  # a full disk, an unwritable cache or local_dir
        raise HubError(f"{ref}: cannot write the download ({e}); free space or set HF_HUB_CACHE / --local-dir") from e
    except Exception as e:  # noqa: BLE001 - the connection broke after the probe; its class depends on the client
        raise HubError(f"{ref}: the download broke off ({type(e).__name__}: {_first_line(e)}); run it again") from e
    folder = Path(folder)
    if commit is None and _COMMIT.fullmatch(folder.name) and folder.parent.name == "snapshots":
        commit = folder.name  # offline: the cache's folder is named by the commit
    snapshot = HubSnapshot(ref, folder, commit)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing and not _layout_complete(folder):
        held = "the cached copy" if why_cache else "the repo"
        raise HubError(f"{snapshot.label}: {held} has no {' or '.join(missing)}; a pvvae weights repo holds "
                       f"{CONFIG_NAME} + {WEIGHTS_NAME} (+ {CARD_NAME}), as `save_pretrained` writes them (or a "
                       f"diffusers VAE: {CONFIG_NAME} + {DIFFUSERS_WEIGHTS_NAME}, at the root or in "
                       f"{PIPELINE_SUBFOLDER}/)")
    if not missing:
        read_config(folder / CONFIG_NAME, snapshot.label)  # a wrong format fails here, in one line, not at first use
    return snapshot


def _probe(ref: HubRef, endpoint: str | None) -> tuple[str | None, str | None]:
    """Ask the hub which commit ``ref`` names, in one request without retries: ``(commit, None)``, or
    ``(None, why)`` when the hub cannot be reached or is down (the caller falls back to the cache). ``HubError``
    when the hub answers that the repo or revision does not exist or is not accessible."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(ref.repo_id, revision=ref.revision, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError as e:
        raise HubError(f"{ref}: a gated repo; accept its terms on the hub and log in (`hf auth login` or "
                       "HF_TOKEN)") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"{ref}: no such model repo on {api.endpoint} (or it is private: log in with "
                       "`hf auth login` or set HF_TOKEN)") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{ref}: the repo has no revision {ref.revision!r} (give a branch, a tag or a 40-hex "
                       "commit)") from e
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status is not None and status >= 500:
            return None, f"the hub at {api.endpoint} is down (HTTP {status})"
        raise HubError(f"{ref}: the hub at {api.endpoint} refused ({_first_line(e)})") from e
    except Exception as e:  # noqa: BLE001 - no answer at all: DNS, refused, timeout, TLS, proxy, offline mode;
        # the exception's class depends on the client version (requests, httpx, httpx2), so none is named here.
        return None, f"the hub at {api.endpoint} is unreachable ({type(e).__name__}: {_first_line(e)})"
    if not isinstance(info.sha, str) or not _COMMIT.fullmatch(info.sha):
        raise HubError(f"{ref}: the hub at {api.endpoint} answered without a commit for the revision "
                       f"(sha {info.sha!r}); is HF_ENDPOINT a Hugging Face hub?")
    return info.sha, None


def _cached_commit(ref: HubRef, cache_dir) -> bool:
    """Whether commit ``ref.revision`` is complete in the hub cache (``snapshot_download`` with
    ``local_files_only`` succeeds and finds the two required files)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=cache_dir,
                                        allow_patterns=list(REPO_FILES), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (the class differs between client versions): ask the hub
        return False
    return _layout_complete(folder)


def _cache_name(cache_dir) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _first_line(error: Exception) -> str:
    """The gist of a client error on one line: its first two lines (status, then the URL), at most 200 chars."""
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2]) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
