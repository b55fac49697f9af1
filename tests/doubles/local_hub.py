"""A small local Hugging Face Hub for offline tests of the push path.

It speaks just enough of the Hub's HTTP API for `huggingface_hub` (2.4) and
`datasets` to round-trip a dataset: create a repo, upload files over the
classic LFS protocol, commit, list trees and download with ranges. Clients
must run with `HF_HUB_DISABLE_XET=1` set before `huggingface_hub` is imported
(the server has no Xet storage) and `HF_ENDPOINT` pointing here.

Repos live on disk under `root` as git-like history: every commit has a
40-hex sha, a parent and a full file tree; branches and tags are refs to
commits. Blobs are stored once, by sha256, under `root/objects`.

Tests drive failures with `fail_next()` and check retries with `calls()`;
Authorization headers are kept in memory (`requests`, `authorizations()`)
so a test can prove a token was sent, and are never printed or logged.

Run it standalone with `python tests/doubles/local_hub.py --port P --root DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote

from aiohttp import web

USER = "user"  # the one account this hub knows: repos created without an organization land here
LFS_THRESHOLD = 10 * 1024 * 1024  # the real Hub refuses regular files above 10 MB
LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".h5", ".npy", ".npz",
                ".pkl", ".pickle", ".zip", ".gz", ".zst", ".tar", ".onnx", ".msgpack", ".lance", ".tfrecord")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
REPO_TYPES = ("model", "dataset", "space")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SEG = r"[^/]+"
_SHA = re.compile(r"[0-9a-f]{40}")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_id(data: bytes) -> str:
    """Git's sha1 of a blob: what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error answer; `code` becomes `X-Error-Code`, which the client maps to its exception types."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Request:
    """One request as the hub saw it. `authorization` is kept out of repr so it cannot leak into logs."""

    method: str
    path: str
    kind: str
    status: int = 0
    authorization: str | None = field(default=None, repr=False)


@dataclass
class _Fault:
    pattern: re.Pattern
    status: int
    times: int
    retry_after: float | None


# (method or None, regex on the raw path, kind); the first match wins. Repo paths keep `/` literal in the
# repo id while revisions and file paths arrive %-encoded, so matching the raw path keeps them unambiguous.
_R = rf"(?P<ns>{_NAME})/(?P<name>{_NAME})"
_API = rf"/api/(?P<t>models|datasets|spaces)/{_R}"  # a repo's API root
_ROUTES: list[tuple[str | None, re.Pattern, str]] = [
    (m, re.compile(p), k) for m, p, k in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"{_API}(?:/revision/(?P<rev>{_SEG}))?", "repo_info"),
        ("POST", rf"{_API}/preupload/(?P<rev>{_SEG})", "preupload"),
        ("POST", rf"{_API}/commit/(?P<rev>{_SEG})", "commit"),
        ("GET", rf"{_API}/tree/(?P<rev>{_SEG})(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"{_API}/paths-info/(?P<rev>{_SEG})", "paths_info"),
        ("GET", rf"{_API}/refs", "refs"),
        ("GET", rf"{_API}/commits/(?P<rev>{_SEG})", "commits"),
        (None, rf"{_API}/branch/(?P<branch>{_SEG})", "branch"),
        ("PUT", rf"{_API}/settings", "settings"),
        ("POST", rf"/(?:(?P<t>datasets|spaces)/)?{_R}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("POST", rf"/(?:(?P<t>datasets|spaces)/)?{_R}\.git/info/lfs/objects/verify", "lfs_verify"),
        ("PUT", r"/_lfs/upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("GET", r"/_lfs/objects/(?P<oid>[0-9a-f]{64})", "lfs_download"),
        ("GET", rf"/(?:(?P<t>datasets|spaces)/)?{_R}/resolve/(?P<rev>{_SEG})/(?P<path>.+)", "resolve"),
    ]
]


def _match_route(method: str, raw_path: str) -> tuple[str, dict]:
    for m, pattern, kind in _ROUTES:
        if (m is None or m == method or (m == "GET" and method == "HEAD")) and (hit := pattern.fullmatch(raw_path)):
            return kind, {k: unquote(v) for k, v in hit.groupdict().items() if v is not None}
    return "unknown", {}


class Store:
    """Repos, commits and blobs on disk. Callers serialise access (the server runs one event loop)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    # -- blobs ------------------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.root / "tmp" / uuid.uuid4().hex
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def adopt_file(self, tmp: Path, sha256: str) -> None:
        path = self.object_path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)

    # -- repos ------------------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def load(self, repo_type: str, repo_id: str) -> dict:
        meta = self.repo_dir(repo_type, repo_id) / "repo.json"
        if not meta.is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(meta.read_text())

    def save(self, repo_type: str, repo_id: str, repo: dict) -> None:
        d = self.repo_dir(repo_type, repo_id)
        tmp = d / f"repo.json.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(repo, indent=1))
        os.replace(tmp, d / "repo.json")

    def create(self, repo_type: str, repo_id: str, private: bool) -> dict:
        d = self.repo_dir(repo_type, repo_id)
        (d / "commits").mkdir(parents=True, exist_ok=True)
        repo = {"id": repo_id, "type": repo_type, "private": private, "createdAt": _now(),
                "branches": {}, "tags": {}, "prs": 0}
        # Like the Hub, a new repo starts with one commit holding .gitattributes, so `main` always has a head.
        sha = self.write_commit(repo_type, repo_id, None, self.tree_with({}, ".gitattributes", GITATTRIBUTES.encode()),
                                "initial commit", "")
        repo["branches"]["main"] = sha
        self.save(repo_type, repo_id, repo)
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        self.load(repo_type, repo_id)
        shutil.rmtree(self.repo_dir(repo_type, repo_id))

    # -- commits ----------------------------------------------------------------------------------
    def commit(self, repo_type: str, repo_id: str, sha: str) -> dict:
        return json.loads((self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json").read_text())

    def resolve(self, repo_type: str, repo_id: str, rev: str) -> tuple[dict, str]:
        """(repo, commit sha) for a branch, tag, `refs/heads|tags/...` name or commit sha."""
        repo = self.load(repo_type, repo_id)
        for name in (rev, rev.removeprefix("refs/heads/")):
            if name in repo["branches"]:
                return repo, repo["branches"][name]
        if rev.removeprefix("refs/tags/") in repo["tags"]:
            return repo, repo["tags"][rev.removeprefix("refs/tags/")]
        if _SHA.fullmatch(rev) and (self.repo_dir(repo_type, repo_id) / "commits" / f"{rev}.json").is_file():
            return repo, rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def tree_with(self, tree: dict, path: str, data: bytes) -> dict:
        sha = self.put_bytes(data)
        return {**tree, path: {"sha256": sha, "size": len(data), "oid": git_blob_id(data), "lfs": False}}

    def write_commit(self, repo_type: str, repo_id: str, parent: str | None, tree: dict, title: str,
                     message: str) -> str:
        date = _now()
        body = json.dumps({"parent": parent, "tree": tree, "title": title, "message": message, "date": date,
                           "nonce": uuid.uuid4().hex}, sort_keys=True)
        sha = hashlib.sha1(body.encode()).hexdigest()
        commit = {"id": sha, "parent": parent, "title": title, "message": message, "date": date, "tree": tree}
        (self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json").write_text(json.dumps(commit))
        return sha


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or path.startswith(".git/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _folders(tree: dict) -> set[str]:
    out = set()
    for path in tree:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _tree_id(tree: dict, folder: str) -> str:
    prefix = folder + "/"
    items = sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(prefix))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()


class LocalHub:
    """A local Hub server on `host:port` storing repos under `root`; runs its event loop in a thread.

    `tokens`: when given, only these bearer tokens are accepted; otherwise any token is. Writes and
    reads of private repos need one either way, as on the real Hub.
    """

    def __init__(self, root: str | os.PathLike, port: int = 0, host: str = "127.0.0.1",
                 tokens: list[str] | None = None):
        self.root = Path(root)
        self.store = Store(self.root)
        self.host, self.port = host, port
        self.tokens = set(tokens) if tokens is not None else None
        self.requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving in a background thread; returns the base URL (set it as HF_ENDPOINT)."""
        if self.url:
            return self.url
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(self.make_app(), access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, self.port)
                loop.run_until_complete(site.start())
                self.port = self._runner.addresses[0][1]
                self.url = f"http://{self.host}:{self.port}"
            except BaseException as exc:  # surface bind errors in start(), not in a dead thread
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="local-hub", daemon=True)
        self._thread.start()
        ready.wait(30)
        if error:
            raise error[0]
        if not self.url:
            raise RuntimeError("local hub did not start within 30 s")
        return self.url

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop = self._thread = self._runner = None
        self.url = None

    def __enter__(self) -> "LocalHub":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test hooks -------------------------------------------------------------------------------
    def fail_next(self, path_regex: str, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer `status` to the next `times` requests whose path matches `path_regex` (re.search on the
        decoded path), with `Retry-After` when given (huggingface_hub only honours whole seconds)."""
        with self._lock:
            self._faults.append(_Fault(re.compile(path_regex), status, times, retry_after))

    def calls(self, kind: str | None = None, method: str | None = None) -> int:
        """How many requests of this kind (e.g. "commit", "preupload", "lfs_batch", "resolve", "tree") and
        method arrived, injected failures included: the way to assert a client retried."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (kind is None or r.kind == kind) and (method is None or r.method == method.upper()))

    def authorizations(self, kind: str | None = None) -> list[str | None]:
        """Authorization headers received (None where absent), for asserting a token was sent."""
        with self._lock:
            return [r.authorization for r in self.requests if kind is None or r.kind == kind]

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def branch_head(self, repo_id: str, branch: str = "main", repo_type: str = "dataset") -> str:
        return self.store.load(repo_type, repo_id)["branches"][branch]

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.pattern.search(path):
                    fault.times -= 1
                    return fault
            self._faults = [f for f in self._faults if f.times > 0]
        return None

    # -- HTTP -------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024**3)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        kind, args = _match_route(request.method, raw_path)
        record = Request(request.method, request.path, kind, authorization=request.headers.get("Authorization"))
        with self._lock:
            self.requests.append(record)
        try:
            if fault := self._take_fault(request.path):
                headers = {"X-Error-Message": f"injected {fault.status}"}
                if fault.retry_after is not None:
                    ra = fault.retry_after
                    headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
                raise HubError(fault.status, f"injected {fault.status}", headers=headers)
            handler = getattr(self, f"_h_{kind}", None)
            if handler is None:
                raise HubError(404, f"Not implemented by the local hub: {request.method} {request.path}")
            if "t" in args or "ns" in args:
                args["repo_type"] = (args.pop("t", None) or "models")[:-1]
                args["repo_id"] = f"{args.pop('ns')}/{args.pop('name')}"
            response = await handler(request, **args)
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            response = web.json_response({"error": err.message}, status=err.status, headers=headers)
        except Exception as exc:  # a bug here should read as a 500 in the client, with the traceback on stderr
            traceback.print_exc()
            response = web.json_response({"error": f"local hub error: {exc!r}"}, status=500)
        record.status = response.status
        return response

    def _base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _auth(self, request: web.Request, required: bool = True) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        if token is not None and self.tokens is not None and token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        if required and not token:
            raise HubError(401, "You must be authenticated to do this", "RepoNotFound")
        return token

    def _readable(self, request: web.Request, repo_type: str, repo_id: str, rev: str | None = None):
        """Resolve a repo (and revision) for reading; private repos need a token, as on the Hub."""
        repo = self.store.load(repo_type, repo_id)
        if repo["private"]:
            self._auth(request)
        if rev is None:
            return repo, None
        return self.store.resolve(repo_type, repo_id, rev)

    def _url(self, base: str, repo_type: str, repo_id: str) -> str:
        return f"{base}/{repo_id}" if repo_type == "model" else f"{base}/{repo_type}s/{repo_id}"

    async def _h_whoami(self, request):
        self._auth(request)
        return web.json_response({"type": "user", "name": USER, "fullname": USER, "orgs": [],
                                  "auth": {"accessToken": {"role": "write"}}})

    async def _h_agent_harnesses(self, request):
        """huggingface_hub fetches this registry (best effort) to tag its user agent; an empty one is enough."""
        return web.json_response({"standardEnvVars": [], "harnesses": {}})

    async def _h_create_repo(self, request):
        self._auth(request)
        body = await request.json()
        name, org = body.get("name"), body.get("organization") or USER
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES or not re.fullmatch(_NAME, name or "") or not re.fullmatch(_NAME, org):
            raise HubError(400, f"Invalid repo: {org}/{name} ({repo_type})")
        repo_id = f"{org}/{name}"
        url = self._url(self._base(request), repo_type, repo_id)
        if (self.store.repo_dir(repo_type, repo_id) / "repo.json").exists():
            return web.json_response({"error": "You already created this repo", "url": url}, status=409,
                                     headers={"X-Error-Message": "You already created this repo"})
        private = bool(body.get("private")) or body.get("visibility") == "private"
        self.store.create(repo_type, repo_id, private)
        return web.json_response({"url": url, "name": repo_id, "id": repo_id})

    async def _h_delete_repo(self, request):
        self._auth(request)
        body = await request.json()
        self.store.delete(body.get("type") or "model", f"{body.get('organization') or USER}/{body.get('name')}")
        return web.Response(text="")

    async def _h_settings(self, request, repo_type, repo_id):
        self._auth(request)
        repo = self.store.load(repo_type, repo_id)
        body = await request.json()
        if "private" in body or "visibility" in body:
            repo["private"] = bool(body.get("private")) or body.get("visibility") == "private"
        self.store.save(repo_type, repo_id, repo)
        return web.json_response({"private": repo["private"]})

    async def _h_validate_yaml(self, request):
        await request.read()
        return web.json_response({"errors": [], "warnings": []})

    async def _h_repo_info(self, request, repo_type, repo_id, rev="main"):
        repo, sha = self._readable(request, repo_type, repo_id, rev)
        commit = self.store.commit(repo_type, repo_id, sha)
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, e in sorted(commit["tree"].items()):
            sib = {"rfilename": path}
            if blobs:
                sib.update(size=e["size"], blobId=e["oid"])
                if e["lfs"]:
                    sib["lfs"] = {"size": e["size"], "sha256": e["sha256"], "pointerSize": e["pointerSize"]}
            siblings.append(sib)
        return web.json_response({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
            "sha": sha, "private": repo["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "createdAt": repo["createdAt"], "lastModified": commit["date"], "siblings": siblings,
            "usedStorage": sum(e["size"] for e in commit["tree"].values()),
        })

    async def _h_preupload(self, request, repo_type, repo_id, rev):
        self._auth(request)
        _, sha = self._readable(request, repo_type, repo_id, rev)
        tree = self.store.commit(repo_type, repo_id, sha)["tree"]
        body = await request.json()
        files = []
        for f in body.get("files", []):
            path, size = f["path"], int(f.get("size", 0))
            sample = base64.b64decode(f.get("sample") or "")
            lfs = size > LFS_THRESHOLD or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample
            existing = tree.get(path)
            # The client compares this oid with its own (sha256 for LFS, git sha1 otherwise) to skip no-op adds.
            oid = (existing["sha256"] if existing["lfs"] else existing["oid"]) if existing else None
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return web.json_response({"files": files, "commitOid": sha})

    async def _h_lfs_batch(self, request, repo_type, repo_id):
        self._auth(request)
        self.store.load(repo_type, repo_id)
        body = await request.json()
        base, op = self._base(request), body.get("operation", "upload")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry = {"oid": oid, "size": size, "authenticated": True}
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                entry["error"] = {"code": 422, "message": "invalid oid"}
            elif op == "download":
                if self.store.has_object(oid):
                    entry["actions"] = {"download": {"href": f"{base}/_lfs/objects/{oid}", "header": {}}}
                else:
                    entry["error"] = {"code": 404, "message": "Object does not exist"}
            elif not self.store.has_object(oid):  # already stored => no actions, the client skips the upload
                lfs = f"{base}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}.git/info/lfs/objects"
                entry["actions"] = {"upload": {"href": f"{base}/_lfs/upload/{oid}?size={size}", "header": {}},
                                    "verify": {"href": f"{lfs}/verify", "header": {}}}
            objects.append(entry)
        return web.json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                                 content_type="application/vnd.git-lfs+json")

    async def _h_lfs_upload(self, request, oid):
        """The PUT target the batch answer hands out; like a presigned S3 URL it takes no token."""
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.content.iter_chunked(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != oid or ("size" in request.query and int(request.query["size"]) != size):
            os.unlink(tmp_name)
            raise HubError(400, "Uploaded content does not match the announced oid/size")
        self.store.adopt_file(Path(tmp_name), oid)
        return web.Response(text="", headers={"ETag": f'"{oid}"'})

    async def _h_lfs_verify(self, request, repo_type, repo_id):
        self._auth(request)
        body = await request.json()
        path = self.store.object_path(body.get("oid", "0" * 64))
        if not path.is_file() or path.stat().st_size != int(body.get("size", -1)):
            raise HubError(404, "Object not found")
        return web.json_response({"success": True})

    async def _h_lfs_download(self, request, oid):
        if not self.store.has_object(oid):
            raise HubError(404, "Object not found")
        return self._send_file(request, self.store.object_path(oid), {})

    async def _h_commit(self, request, repo_type, repo_id, rev):
        self._auth(request)
        repo = self.store.load(repo_type, repo_id)
        body = await request.read()
        if request.content_type == "application/json":  # legacy JSON payload
            data = json.loads(body)
            lines = [{"key": "header", "value": {"summary": data.get("summary"), "description": data.get("description"),
                                                 "parentCommit": data.get("parentCommit")}}]
            lines += [{"key": "file", "value": v} for v in data.get("files", [])]
            lines += [{"key": "lfsFile", "value": v} for v in data.get("lfsFiles", [])]
            lines += [{"key": "deletedFile", "value": v} for v in data.get("deletedFiles", [])]
        else:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        create_pr = request.query.get("create_pr") in ("1", "true")
        base_rev = rev.removeprefix("refs/heads/")
        if base_rev not in repo["branches"] and not (create_pr and _SHA.fullmatch(rev)):
            raise HubError(404, f"Invalid rev id: {rev} (commits go to an existing branch)", "RevisionNotFound")
        _, head = self.store.resolve(repo_type, repo_id, rev)
        parent = header.get("parentCommit")
        if parent and parent != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(self.store.commit(repo_type, repo_id, head)["tree"])
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = _check_path(str(value.get("path", "")).strip("/") if key == "deletedFolder" else value.get("path", ""))
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding", "base64") == "base64" else content.encode()
                tree = self.store.tree_with(tree, path, data)
            elif key == "lfsFile":
                oid = value.get("oid", "")
                if not self.store.has_object(oid):
                    raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
                size = self.store.object_path(oid).stat().st_size
                pointer = lfs_pointer(oid, size)
                tree[path] = {"sha256": oid, "size": size, "oid": git_blob_id(pointer), "lfs": True,
                              "pointerSize": len(pointer)}
            elif key == "deletedFile":
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del tree[path]
            elif key == "deletedFolder":
                gone = [p for p in tree if p.startswith(path + "/")]
                if not gone:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del tree[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        sha = self.store.write_commit(repo_type, repo_id, head, tree, header.get("summary") or "",
                                      header.get("description") or "")
        base = self._url(self._base(request), repo_type, repo_id)
        answer = {"success": True, "commitOid": sha, "commitUrl": f"{base}/commit/{sha}", "hookOutput": ""}
        if create_pr:
            repo["prs"] += 1
            repo["branches"][f"refs/pr/{repo['prs']}"] = sha
            answer["pullRequestUrl"] = f"{base}/discussions/{repo['prs']}"
        else:
            repo["branches"][base_rev] = sha
        self.store.save(repo_type, repo_id, repo)
        return web.json_response(answer)

    def _entry(self, repo_type, repo_id, head, tree, path, expand) -> dict:
        if path in tree:
            e = tree[path]
            out = {"type": "file", "oid": e["oid"], "size": e["size"], "path": path}
            if e["lfs"]:
                out["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": e["pointerSize"]}
        else:
            out = {"type": "directory", "oid": _tree_id(tree, path), "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit(repo_type, repo_id, head, path)
        return out

    def _last_commit(self, repo_type, repo_id, head, path) -> dict:
        """The newest commit that changed `path` (file or folder), found by walking first parents."""
        def state(tree):
            return tree[path]["oid"] if path in tree else _tree_id(tree, path)

        commit = self.store.commit(repo_type, repo_id, head)
        while commit["parent"]:
            parent = self.store.commit(repo_type, repo_id, commit["parent"])
            if state(parent["tree"]) != state(commit["tree"]):
                break
            commit = parent
        return {"id": commit["id"], "title": commit["title"], "date": commit["date"]}

    async def _h_tree(self, request, repo_type, repo_id, rev, path=""):
        _, sha = self._readable(request, repo_type, repo_id, rev)
        tree = self.store.commit(repo_type, repo_id, sha)["tree"]
        path = path.strip("/")
        folders = _folders(tree)
        if path and path not in folders:
            # HfFileSystem relies on this exact answer to tell "not a folder" from other errors.
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        expand = request.query.get("expand", "").lower() in ("1", "true")
        prefix = path + "/" if path else ""
        names = [p for p in sorted(folders) + sorted(tree) if p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix):]]
        # Folders first, as the Hub lists them.
        names.sort(key=lambda p: (p in tree, p))
        return web.json_response([self._entry(repo_type, repo_id, sha, tree, p, expand) for p in names])

    async def _h_paths_info(self, request, repo_type, repo_id, rev):
        _, sha = self._readable(request, repo_type, repo_id, rev)
        tree = self.store.commit(repo_type, repo_id, sha)["tree"]
        if request.content_type == "application/json":
            body = await request.json()
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:  # the client posts form data: paths=a&paths=b&expand=False
            form = parse_qs((await request.read()).decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        folders = _folders(tree)
        out = [self._entry(repo_type, repo_id, sha, tree, p.strip("/"), expand)
               for p in paths if p.strip("/") in tree or p.strip("/") in folders]
        return web.json_response(out)  # missing paths are left out, not an error

    async def _h_refs(self, request, repo_type, repo_id):
        repo, _ = self._readable(request, repo_type, repo_id)
        ref = lambda name, kind, sha: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}  # noqa: E731
        branches = [ref(n, "heads", s) for n, s in repo["branches"].items() if not n.startswith("refs/")]
        prs = [{"name": n, "ref": n, "targetCommit": s} for n, s in repo["branches"].items() if n.startswith("refs/pr/")]
        return web.json_response({"branches": branches, "tags": [ref(n, "tags", s) for n, s in repo["tags"].items()],
                                  "converts": [], "pullRequests": prs})

    async def _h_commits(self, request, repo_type, repo_id, rev):
        _, sha = self._readable(request, repo_type, repo_id, rev)
        out = []
        while sha:
            c = self.store.commit(repo_type, repo_id, sha)
            out.append({"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                        "authors": [{"user": USER}]})
            sha = c["parent"]
        return web.json_response(out)

    async def _h_branch(self, request, repo_type, repo_id, branch):
        self._auth(request)
        repo = self.store.load(repo_type, repo_id)
        if request.method == "DELETE":
            if repo["branches"].pop(branch, None) is None:
                raise HubError(404, f"Branch {branch} not found", "RevisionNotFound")
        elif request.method == "POST":
            body = await request.json() if request.can_read_body else {}
            if branch in repo["branches"]:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            _, start = self.store.resolve(repo_type, repo_id, (body or {}).get("startingPoint") or "main")
            repo["branches"][branch] = start
        else:
            raise HubError(405, "Method not allowed")
        self.store.save(repo_type, repo_id, repo)
        return web.json_response({})

    async def _h_resolve(self, request, repo_type, repo_id, rev, path):
        _, sha = self._readable(request, repo_type, repo_id, rev)
        entry = self.store.commit(repo_type, repo_id, sha)["tree"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]  # the Hub's ETag: sha256 for LFS, git sha1 else
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "X-Linked-Size": str(entry["size"])}
        if entry["lfs"]:
            headers["X-Linked-Etag"] = f'"{etag}"'
        return self._send_file(request, self.store.object_path(entry["sha256"]), headers)

    def _send_file(self, request, path: Path, headers: dict) -> web.StreamResponse:
        """Serve a blob with single-range support (`bytes=a-b`, `a-`, `-n`), which HfFileSystem reads use."""
        size = path.stat().st_size
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start, end, status = 0, size - 1, 200
        if rng := request.headers.get("Range"):
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or m.groups() == ("", ""):
                raise HubError(416, f"Bad range {rng}", headers={"Content-Range": f"bytes */{size}"})
            a, b = m.groups()
            if a == "":
                start, end = max(size - int(b), 0), size - 1
            else:
                start, end = int(a), min(int(b), size - 1) if b else size - 1
            if start >= size or start > end:
                raise HubError(416, f"Range {rng} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        return web.Response(status=status, body=body, headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--root", required=True, help="folder holding repos and blobs (kept between runs)")
    args = parser.parse_args(argv)
    hub = LocalHub(args.root, port=args.port, host=args.host)
    print(f"local hub serving {args.root} at {hub.start()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
