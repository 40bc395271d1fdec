"""A local stand-in for the Hugging Face Hub, for tests: an HTTP server in a thread that answers the requests
``huggingface_hub`` makes to download a repo, so hub tests never touch the real hub.

The protocol, as the client uses it (checked with huggingface_hub 0.x to 2.x):

- ``GET /api/models/{repo}[/revision/{rev}]`` -> JSON ``id``, 40-hex ``sha``, ``private`` (old clients also read
  ``downloads``, ``likes``, ``tags``, ``siblings``);
- ``GET /api/models/{repo}/tree/{rev}?recursive=...`` -> a JSON list of ``{type, oid, size, path}``;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{file}`` -> the bytes, with ``X-Repo-Commit``, a quoted ``ETag`` and
  ``Content-Length``;
- a 404 carries ``X-Error-Code``: ``RepoNotFound``, ``RevisionNotFound`` or ``EntryNotFound``, which the client
  turns into its exceptions.

Revisions (``{rev}``, URL-quoted) are branch or tag names (``refs``) or commits.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def git_blob_oid(data: bytes) -> str:
    """The id git gives a file's content, which the hub reports as a non-LFS file's ``oid`` and ``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Repos of files at commits, with named refs. ``requests`` logs ``(method, path)`` of every request;
    ``unservable`` holds ``(repo_id, filename)`` pairs that the tree lists but ``resolve`` answers EntryNotFound;
    ``status`` (e.g. 503) makes every request fail with that status."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.unservable: set[tuple[str, str]] = set()
        self.status: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._url: str | None = None

    # ---- content
    def add_commit(self, repo_id: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> str:
        """A new commit of ``files`` in ``repo_id``; ``refs`` (branches or tags) now point at it. Returns its sha."""
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        digest = hashlib.sha1(repo_id.encode() + str(len(repo["commits"])).encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha1(files[name]).digest())
        sha = digest.hexdigest()
        repo["commits"][sha] = dict(files)
        for ref in refs:
            repo["refs"][ref] = sha
        return sha

    def sha(self, repo_id: str, ref: str) -> str:
        """The commit ``ref`` of ``repo_id`` points at."""
        return self.repos[repo_id]["refs"][ref]

    # ---- server
    @property
    def url(self) -> str:
        """The hub's address; after ``stop()`` nothing listens there any more (connections are refused)."""
        assert self._url is not None, "start() the hub first"
        return self._url

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- answers: (status, headers, body)
    def answer(self, method: str, raw_path: str) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, raw_path))
        if self.status is not None:
            return _error(self.status, None, f"status {self.status} (test)")
        # Split before unquoting: a revision such as refs/pr/1 arrives as one quoted segment.
        parts = [unquote(p) for p in urlsplit(raw_path).path.split("/")[1:]]
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id, rest = "/".join(parts[2:4]), parts[4:]
                if not rest or rest[0] == "revision":
                    return self._info(repo_id, "/".join(rest[1:]) or "main")
                if rest[0] == "tree" and len(rest) >= 2:
                    return self._tree(repo_id, rest[1])
            elif len(parts) >= 5 and parts[2] == "resolve":
                return self._file("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        except _NotFound as e:
            return _error(404, e.code, e.message)
        return _error(404, None, "no such route")

    def _commit(self, repo_id: str, rev: str) -> tuple[str, dict[str, bytes]]:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _NotFound("RepoNotFound", "Repository not found")
        sha = repo["refs"].get(rev, rev)
        if sha not in repo["commits"]:
            raise _NotFound("RevisionNotFound", "Invalid rev id: " + rev)
        return sha, repo["commits"][sha]

    def _info(self, repo_id: str, rev: str):
        sha, files = self._commit(repo_id, rev)
        body = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "disabled": False, "gated": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": [{"rfilename": name} for name in sorted(files)],
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}
        return _json(body)

    def _tree(self, repo_id: str, rev: str):
        _, files = self._commit(repo_id, rev)
        return _json([{"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": name}
                      for name, data in sorted(files.items())])

    def _file(self, repo_id: str, rev: str, name: str):
        sha, files = self._commit(repo_id, rev)
        if name not in files or (repo_id, name) in self.unservable:
            raise _NotFound("EntryNotFound", f"{name} does not exist on {rev}")
        data = files[name]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"', "Content-Type": "application/octet-stream"}
        return 200, headers, data


class _NotFound(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def _reply(self, send_body: bool) -> None:
        status, headers, body = self.hub.answer(self.command, self.path)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._reply(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._reply(send_body=False)

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: the test output is not a server log
        pass


def _json(body) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _error(status: int, code: str | None, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code is not None:
        headers["X-Error-Code"] = code
    return status, headers, json.dumps({"error": message}).encode()
