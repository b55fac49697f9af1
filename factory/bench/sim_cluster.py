"""A simulated cluster behind the coordinator's backend interface.

Each replica serves its queue of chunks one after another at `rate` answers
per second (like an engine at full batch), with a log-normal spread on each
chunk's time. `time_scale` shrinks every duration, to ask the coordinator
for more chunks per second than a real cluster would. Replicas can be made
to fail to start or to die mid-chunk, for tests of replacement.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from factory.scale import Chunk, ReplicaBackend


class ReplicaDied(RuntimeError):
    pass


@dataclass
class SimReplica:
    index: int
    busy_until: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    done_chunks: int = 0
    dead: asyncio.Event = field(default_factory=asyncio.Event)


class SimBackend(ReplicaBackend):
    def __init__(self, rate: float = 25.0, n: int = 4, spread: float = 0.3, start_s: float = 0.0,
                 time_scale: float = 1.0, seed: int = 0):
        self.rate, self.n, self.spread = rate, n, spread
        self.start_s, self.time_scale = start_s, time_scale
        self.rng = random.Random(seed)
        self.replicas: dict[int, SimReplica] = {}
        self.started = 0
        self.killed = 0
        self.start_failures: dict[int, int] = {}  # index -> how many starts fail
        self.die_after: dict[int, int] = {}  # index -> die once after this many chunks

    async def start(self, index: int) -> SimReplica:
        await asyncio.sleep(self.start_s * self.time_scale)
        if self.start_failures.get(index, 0) > 0:
            self.start_failures[index] -= 1
            raise RuntimeError(f"engine of replica {index} failed to load")
        self.started += 1
        rep = self.replicas[index] = SimReplica(index)
        return rep

    def duration(self, chunk: Chunk) -> float:
        answers = len(chunk.problems) * self.n
        # mean 1: the spread must not change the node's average rate
        jitter = self.rng.lognormvariate(-self.spread ** 2 / 2, self.spread)
        return answers / self.rate * jitter * self.time_scale

    async def process(self, rep: SimReplica, chunk: Chunk) -> dict:
        rep.inflight += 1
        rep.max_inflight = max(rep.max_inflight, rep.inflight)
        try:
            now = time.monotonic()
            rep.busy_until = max(rep.busy_until, now) + self.duration(chunk)
            left = self.die_after.get(rep.index)
            if left is not None and rep.done_chunks >= left:
                del self.die_after[rep.index]
                rep.dead.set()
            try:
                await asyncio.wait_for(rep.dead.wait(), rep.busy_until - now)
            except asyncio.TimeoutError:
                rep.done_chunks += 1
                uuids = [p["uuid"] for p in chunk.problems]
                return {"file": f"data/{chunk.shard}", "uuids": uuids,
                        "stats": {"problems_done": len(uuids), "generations": len(uuids) * self.n}}
            raise ReplicaDied(f"replica {rep.index} died")
        finally:
            rep.inflight -= 1

    async def kill(self, rep: SimReplica) -> None:
        self.killed += 1
        rep.dead.set()

    async def close(self, replicas: list[SimReplica]) -> None:
        self.closed = len(replicas)
        for rep in replicas:
            rep.dead.set()
