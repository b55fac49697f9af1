"""Push a run folder to the Hugging Face Hub, resumably.

huggingface_hub does not retry a failed commit (a 429 on the commit call
raises at once), so commits are made here in chunks, each retried with
backoff on 429/5xx and on a fresh parent after 412/409 (a concurrent commit
to the branch). Before uploading, the remote tree is listed and files whose
sha256 already matches are skipped: a push after a partial failure uploads
only what is missing. The token comes from the environment or the login
cache, as huggingface_hub finds it; it is never printed or written.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from factory.store.finalize import finalize
from factory.store.shards import shard_paths

log = logging.getLogger(__name__)

# Tuning knobs (environment): files per commit, attempts per call, first backoff.
CHUNK_FILES = int(os.environ.get("FACTORY_PUSH_CHUNK_FILES", "50"))
ATTEMPTS = int(os.environ.get("FACTORY_PUSH_ATTEMPTS", "6"))
BACKOFF_S = float(os.environ.get("FACTORY_PUSH_BACKOFF_S", "1.0"))
CHUNK_BYTES = 2 * 1024**3
RETRY_STATUS = {409, 412, 429, 500, 502, 503, 504}


class PushError(RuntimeError):
    pass


@dataclass
class PushResult:
    repo_id: str
    revision: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: int = 0


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _retryable(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return _status(exc) in RETRY_STATUS
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_to_push(out: Path) -> list[Path]:
    """The dataset layout: both configs' shards, the card's plots and the card."""
    return shard_paths(out / "data") + shard_paths(out / "default") + sorted((out / "plots").glob("*.png")) + [out / "README.md"]


def _remote_hashes(api, repo_id: str, revision: str) -> dict[str, str]:
    """sha256 of LFS files and git blob ids of small files already on the branch."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        entries = api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True, expand=True)
        remote = {}
        for e in entries:
            lfs = getattr(e, "lfs", None)
            if lfs is not None:
                remote[e.path] = "sha256:" + lfs.sha256
            elif getattr(e, "blob_id", None):
                remote[e.path] = "git:" + e.blob_id
        return remote
    except (EntryNotFoundError, RevisionNotFoundError):
        return {}


def _git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def push(out: Path, repo_id: str, private: bool = False, revision: str | None = None, token: str | None = None,
         max_attempts: int = ATTEMPTS, wait_max: float = 30.0,
         refresh: bool = True) -> PushResult:
    """`refresh=False` when the card and configs were just written for this
    repo (the end of a `factory run` that pushes): they are not rebuilt."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if refresh:
        finalize(out, repo_id)
    api = HfApi(token=token)
    branch = revision or "main"
    retry = lambda: Retrying(  # noqa: E731
        retry=retry_if_exception(_retryable), stop=stop_after_attempt(max_attempts),
        wait=wait_exponential_jitter(multiplier=BACKOFF_S, max=wait_max, jitter=BACKOFF_S), reraise=True)
    try:
        for attempt in retry():
            with attempt:
                api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch != "main":
            for attempt in retry():
                with attempt:
                    api.create_branch(repo_id, repo_type="dataset", branch=branch, exist_ok=True)
        for attempt in retry():
            with attempt:
                remote = _remote_hashes(api, repo_id, branch)
    except Exception as exc:  # noqa: BLE001 - worded for the user below
        raise PushError(f"cannot reach or create {repo_id}: {_describe(exc)}") from None

    result = PushResult(repo_id, branch)
    todo: list[Path] = []
    files = files_to_push(out)
    local = {f.relative_to(out).as_posix() for f in files}
    # shards the remote still has and the local dataset no longer does: deleted in the last commit, with the card
    stale = sorted(p for p in remote if p.split("/")[0] in ("data", "default") and p.endswith(".parquet")
                   and p not in local)
    for f in files:
        rel = f.relative_to(out).as_posix()
        have = remote.get(rel)
        if have and have in ("sha256:" + sha256_of(f), "git:" + _git_blob_id(f)):
            result.skipped.append(rel)
        else:
            todo.append(f)
    # README last: the card only describes shards that are already up.
    todo.sort(key=lambda p: p.name == "README.md")
    chunks: list[list[Path]] = [[]]
    size = 0
    for f in todo:
        if len(chunks[-1]) >= CHUNK_FILES or size + f.stat().st_size > CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(f)
        size += f.stat().st_size
    batches = [[CommitOperationAdd(path_in_repo=f.relative_to(out).as_posix(), path_or_fileobj=str(f)) for f in c]
               for c in chunks if c]
    if stale:
        if not batches:
            batches.append([])
        batches[-1] += [CommitOperationDelete(path_in_repo=p) for p in stale]
    for ops in batches:
        try:
            for attempt in retry():
                with attempt:
                    head = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
                    api.create_commit(repo_id, ops, repo_type="dataset", revision=branch, parent_commit=head,
                                      commit_message=f"reasoning-factory: upload {len(ops)} file(s)")
        except Exception as exc:  # noqa: BLE001
            raise PushError(f"upload to {repo_id}@{branch} failed after {max_attempts} attempts "
                            f"({len(result.uploaded)} of {len(todo)} files are up; push again to send the rest): "
                            f"{_describe(exc)}") from None
        result.commits += 1
        result.uploaded += [op.path_in_repo for op in ops if isinstance(op, CommitOperationAdd)]
        result.deleted += [op.path_in_repo for op in ops if isinstance(op, CommitOperationDelete)]
        log.info(f"pushed {len(result.uploaded)}/{len(todo)} files")
    return result


def _describe(exc: BaseException) -> str:
    status = _status(exc)
    msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    token = os.environ.get("HF_TOKEN")
    if token and token in msg:  # never echo a token, whatever the server said
        msg = msg.replace(token, "***")
    return f"HTTP {status}: {msg}" if status else f"{type(exc).__name__}: {msg}"
