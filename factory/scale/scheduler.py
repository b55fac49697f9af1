"""The scheduling loop alone: chunks to replicas with back-pressure, dead
replicas replaced and their chunks sent again, shard numbers leased in
blocks. Replicas sit behind `ReplicaBackend`: Ray's in `cluster.py`, a
simulated cluster in `factory bench scale`."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

from factory.driver import RunError
from factory.store.shards import shard_name, write_text_atomic

log = logging.getLogger(__name__)

SEQ_BLOCK = 64


@dataclass
class Chunk:
    seq: int
    problems: list[dict[str, Any]]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    delay_s: float = 0.0  # wait this long before sending it (problems that failed for now, sent again)

    @property
    def shard(self) -> str:
        return shard_name(self.seq)


@dataclass(eq=False)
class _Slot:
    index: int
    handle: Any = None
    epoch: int = 0  # bumped at each replacement: late news from the old one is ignored
    ready: bool = False
    inflight: int = 0


class ReplicaBackend(ABC):
    """How replicas are made, fed and killed."""

    @abstractmethod
    async def start(self, index: int) -> Any:
        """Start replica `index`; return its handle once it can take chunks."""

    @abstractmethod
    async def process(self, handle: Any, chunk: Chunk) -> dict[str, Any]:
        """Have the replica generate, verify and write `chunk`; its summary."""

    @abstractmethod
    async def kill(self, handle: Any) -> None:
        """Stop a replica at once (it may already be dead)."""

    async def close(self, handles: list[Any]) -> None:
        """Stop the replicas still running at the end of the run."""
        for h in handles:
            await self.kill(h)

    def is_replica_failure(self, exc: BaseException) -> bool:
        """True when `exc` means the replica (not the driver) failed."""
        return not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, RunError))


class Coordinator:
    """Hands chunks to replicas with back-pressure; replaces dead replicas."""

    def __init__(self, backend: ReplicaBackend, replicas: int, chunks: Iterator[Chunk],
                 on_result: Callable[[Chunk, dict[str, Any]], None], inflight: int = 2,
                 max_restarts: int = 8, max_attempts: int = 3,
                 on_first_ready: Callable[[], None] = lambda: None,
                 on_failure: Callable[[Chunk], Chunk | None] = lambda chunk: chunk):
        self.backend = backend
        self.slots = [_Slot(i) for i in range(replicas)]
        self.chunks = chunks
        self.on_result = on_result
        self.inflight = inflight
        self.max_restarts = max_restarts
        self.max_attempts = max_attempts
        self.on_first_ready = on_first_ready
        self.on_failure = on_failure  # what of a failed chunk is left to send (None: nothing)
        self.restarts = 0
        self.resent = 0
        self._retry: deque[Chunk] = deque()
        self._later: deque[Chunk] = deque()  # sent once the source is done (see requeue)
        self._tasks: dict[asyncio.Future, tuple[_Slot, int, Chunk | None]] = {}
        self._finished: asyncio.Queue | None = None  # tasks land here when done: O(1) per event
        self._idle: dict[_Slot, None] = {}  # ready slots with room, in arrival order
        self._source_done = False
        self.chunks_out = 0  # chunks handed out and not yet back
        self._any_ready = False
        self._failed_starts = 0

    def requeue(self, chunk: Chunk) -> None:
        """Send `chunk` again after the source's own chunks (its problems failed for now)."""
        self._later.append(chunk)

    def _next_chunk(self) -> Chunk | None:
        if self._retry:
            return self._retry.popleft()
        if not self._source_done:
            chunk = next(self.chunks, None)
            if chunk is not None:
                return chunk
            self._source_done = True
        return self._later.popleft() if self._later else None

    def _pending(self) -> bool:
        return bool(self._retry or not self._source_done or self._later)

    async def _send(self, handle: Any, chunk: Chunk) -> dict[str, Any]:
        if chunk.delay_s:
            await asyncio.sleep(chunk.delay_s)
        return await self.backend.process(handle, chunk)

    def _spawn(self, coro: Awaitable, slot: _Slot, chunk: Chunk | None) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = (slot, slot.epoch, chunk)
        task.add_done_callback(self._finished.put_nowait)

    def _start(self, slot: _Slot) -> None:
        slot.ready = False
        slot.inflight = 0
        self._idle.pop(slot, None)
        self._spawn(self.backend.start(slot.index), slot, None)

    def _fill(self) -> None:
        while self._idle and self._pending():
            slot = next(iter(self._idle))
            chunk = self._next_chunk()
            if chunk is None:
                return
            slot.inflight += 1
            self.chunks_out += 1
            del self._idle[slot]
            if slot.inflight < self.inflight:
                self._idle[slot] = None  # to the back: the next chunk goes to the next replica with room
            self._spawn(self._send(slot.handle, chunk), slot, chunk)

    async def _replace(self, slot: _Slot, exc: BaseException, starting: bool) -> None:
        what = "could not start" if starting else "failed"
        reason = describe(exc)
        if starting and not self._any_ready:
            self._failed_starts += 1
            if self._failed_starts >= len(self.slots):  # each one failed before any came up: not bad luck
                raise RunError(f"replica {slot.index} {what}: {reason}")
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise RunError(f"replica {slot.index} {what} and {self.max_restarts} replacements are used up "
                           f"(scale.max_replica_restarts): {reason}")
        log.info(f"replica {slot.index} {what} ({reason.splitlines()[0][:300]}); replacing it "
                 f"({self.restarts}/{self.max_restarts})")
        old, slot.handle = slot.handle, None
        slot.epoch += 1
        if old is not None:
            await self.backend.kill(old)
        self._start(slot)

    async def _handle(self, task: asyncio.Task) -> None:
        slot, epoch, chunk = self._tasks.pop(task)
        exc = task.exception()
        if exc is not None and not self.backend.is_replica_failure(exc):
            raise exc
        if chunk is None:  # a start finished
            if exc is None:
                if not self._any_ready:
                    self.on_first_ready()
                slot.handle, slot.ready, self._any_ready = task.result(), True, True
                self._idle[slot] = None
            elif epoch == slot.epoch:
                await self._replace(slot, exc, starting=True)
            return
        self.chunks_out -= 1
        if epoch == slot.epoch:
            slot.inflight -= 1
            self._idle[slot] = None
        if exc is None:
            self.on_result(chunk, task.result())
            return
        chunk.errors.append(describe(exc)[:500])
        left = self.on_failure(chunk)  # the driver keeps what the replica finished before it failed
        if left is not None:
            left.attempts = chunk.attempts + 1 if len(left.problems) == len(chunk.problems) else 1
            if left.attempts >= self.max_attempts:  # failed each time without finishing one problem
                first = left.problems[0].get("uuid") if left.problems else "?"
                raise RunError(f"chunk {left.shard} (first problem {first}) failed {left.attempts} times "
                               f"(scale.max_chunk_attempts); last error: {chunk.errors[-1]}")
            self.resent += 1
            self._retry.appendleft(left)
        if epoch == slot.epoch:
            await self._replace(slot, exc, starting=False)

    async def run(self) -> None:
        self._finished = asyncio.Queue()
        for slot in self.slots:
            self._start(slot)
        try:
            while True:
                self._fill()
                if not self._pending() and not self.chunks_out:
                    break
                if not self._tasks:
                    raise RunError("no replica is running")
                await self._handle(await self._finished.get())
                while not self._finished.empty():  # everything else already done, in one pass
                    await self._handle(self._finished.get_nowait())
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.backend.close([s.handle for s in self.slots if s.handle is not None])


def describe(exc: BaseException) -> str:
    """`Type: message` of the error a replica raised, without Ray's wrapping."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def chunk_size_for(pending: int, replicas: int, chunk_size: int, inflight: int) -> int:
    """`chunk_size`, or smaller when the work left would not reach every
    replica's queue (48 problems on 2 replicas: chunks of 12, not one of 256)."""
    return max(1, min(chunk_size, -(-pending // (replicas * inflight))))


def make_chunks(problems: Iterable[dict[str, Any]], size: int, next_seq: Callable[[], int]) -> Iterator[Chunk]:
    """Chunks of `size` problems, read lazily: the source is never held whole."""
    it = iter(problems)
    while batch := list(itertools.islice(it, size)):
        yield Chunk(next_seq(), batch)


class SeqLease:
    """Shard numbers for chunks, leased in blocks recorded in `ray/seq.json`,
    so that no later driver hands out a number an orphaned worker may write."""

    def __init__(self, path: Path, start: int):
        self.path = path
        try:
            leased = int(json.loads(path.read_text())["leased_until"])
        except (OSError, ValueError, KeyError, TypeError):
            leased = 0
        self.next = max(start, leased)
        self.leased_until = self.next

    def __call__(self) -> int:
        if self.next >= self.leased_until:
            self.leased_until = self.next + SEQ_BLOCK
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps({"leased_until": self.leased_until}))
        seq, self.next = self.next, self.next + 1
        return seq
