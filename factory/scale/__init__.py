"""`scale: ray`: the same job on a Ray cluster, from one box to many nodes.

The driver (where `factory run` runs) prepares the problems, cuts the ones
not stored yet into chunks and hands them to engine replicas, at most
`scale.inflight_chunks` per replica: back-pressure, so the driver never
reads ahead of what the cluster can take. Each replica is a Ray actor that
owns one engine (a managed server or an offline engine) with the GPUs it
needs, reserved through a placement group on one node. It generates,
verifies through Math-Verify actors (single-threaded: Math-Verify needs a
main thread) and writes its chunk as one shard straight into the output
folder, so no row passes through the driver. The driver is the only writer
of the manifest: a chunk counts as done when its shard is listed there.

A replica that dies (or whose engine gives up) is killed, replaced, and its
in-flight chunks are sent again under the same shard names, so a late write
by the dead one can only replace a shard with another copy of the same
problems. Shard numbers are leased in blocks recorded in `ray/seq.json`, so
after the driver itself dies a re-run never reuses a number an orphaned
worker may still write; any rows such a worker stores late are dropped at
the next open (see ShardStore.open).

`Coordinator` is the scheduling loop alone, with replicas behind a small
backend class: `RayBackend` here, a simulated cluster in `factory bench scale`.
"""

from factory.scale.cluster import NAMESPACE, Plan, RayBackend, connect, plan
from factory.scale.driver import RayDriver
from factory.scale.replica import EngineReplica, RayRules, VerifierActor
from factory.scale.scheduler import Chunk, Coordinator, ReplicaBackend, SeqLease, chunk_size_for, describe, make_chunks

__all__ = ["NAMESPACE", "Chunk", "Coordinator", "EngineReplica", "Plan", "RayBackend", "RayDriver", "RayRules",
           "ReplicaBackend", "SeqLease", "VerifierActor", "chunk_size_for", "connect", "describe", "make_chunks",
           "plan"]
