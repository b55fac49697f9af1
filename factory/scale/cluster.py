"""Joining or starting a Ray cluster, planning replicas to fit it, and the
Ray backend that starts, feeds and kills replica actors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from factory.config import MULTINODE_BACKENDS, JobConfig
from factory.driver import RunError
from factory.scale.replica import EngineNode, EngineReplica
from factory.scale.scheduler import Chunk, ReplicaBackend

log = logging.getLogger(__name__)

NAMESPACE = "reasoning-factory"


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local
    one; True when this call started Ray (and so must shut it down)."""
    try:
        import ray
    except ImportError:
        raise RunError("scale.mode 'ray' needs Ray: pip install 'reasoning-factory[ray]'") from None

    if ray.is_initialized():
        return False
    # ray.init installs its own SIGTERM handler (a stack dump, then exit):
    # keep ours, so SIGTERM stops the run as cleanly as Ctrl-C does
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _init(address)
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: nothing was ours
                    signal.signal(sig, handler)
    return True


def _init(address: str | None) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address in (None, "", "local"):
        # a private single-node cluster: token auth has nothing to protect
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # address="local": a new cluster, never one some other process left running
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
        log.info(f"started a local Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    else:
        _probe(address)
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunError(f"scale.address: cannot join Ray at {address}: {exc}") from None
        res = ray.cluster_resources()
        log.info(f"joined Ray at {address}: {len(ray.nodes())} node(s), {int(res.get('CPU', 0))} CPUs, "
            f"{int(res.get('GPU', 0))} GPUs")


def _probe(address: str) -> None:
    """Fail fast on a GCS address nobody listens on (ray.init would retry for minutes)."""
    if "://" in address or address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise RunError(f"scale.address: cannot join Ray at {address}: {exc}") from None


@dataclass
class Plan:
    replicas: int
    gpus_per_replica: int
    replica_cpus: float
    verifiers: int
    verifier_cpus: float
    nodes: int = 1
    nodes_per_replica: int = 1  # > 1: one engine process per node, rank 0 serving (STRICT_SPREAD)

    @property
    def replicas_per_node(self) -> int:
        """CPU replicas are spread over nodes; those sharing one split its cores."""
        return -(-self.replicas // max(1, self.nodes))

    @property
    def gpus_per_bundle(self) -> int:
        """GPUs each of a replica's processes holds: all of them, or a node's share."""
        return self.gpus_per_replica // self.nodes_per_replica


def plan(job: JobConfig, resources: dict[str, float], nodes: int = 1, node_gpus: int | None = None) -> Plan:
    """Replica count and resources from the job and the cluster; a clear
    error where they cannot fit (Ray would otherwise wait forever).
    `node_gpus`: the most GPUs one node has (scale.gpus_per_node overrides)."""
    sc, eng = job.scale, job.engine
    cluster_gpus, cluster_cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    gpus = sc.gpus_per_replica
    if gpus is None:
        endpoint = eng.backend == "openai"
        gpus = 0 if endpoint or cluster_gpus == 0 else eng.tensor_parallel_size * eng.data_parallel_size
    if eng.backend.startswith("sglang") and gpus == 0:
        raise RunError("scale: SGLang replicas need GPUs, and this Ray cluster has none "
                       "(set scale.gpus_per_replica on a GPU cluster)")
    per_node = sc.gpus_per_node or node_gpus or gpus
    spans = 1
    if gpus > per_node:
        if gpus % per_node:
            raise RunError(f"scale: a replica of {gpus} GPUs cannot be split evenly over nodes of {per_node} "
                           "(scale.gpus_per_node); make it a multiple")
        spans = gpus // per_node
        if eng.backend not in MULTINODE_BACKENDS:
            raise RunError(f"scale: a replica of {gpus} GPUs spans {spans} nodes of {per_node}, and engine.backend "
                           f"{eng.backend!r} cannot: use vllm-server or sglang-server")
    replicas = sc.replicas
    if replicas is None:
        replicas = cluster_gpus // gpus if gpus else max(1, nodes)  # CPU: one engine per node
        if replicas == 0:
            raise RunError(f"scale: a replica needs {gpus} GPU(s) (engine.tensor_parallel_size x "
                           f"data_parallel_size) and the cluster has {cluster_gpus}")
    elif gpus * replicas > cluster_gpus:
        raise RunError(f"scale.replicas: {replicas} replicas x {gpus} GPU(s) need {gpus * replicas} GPUs; "
                       f"the cluster has {cluster_gpus}")
    verifiers = sc.verifiers or replicas
    need = replicas * sc.replica_cpus + verifiers * sc.verifier_cpus
    if need > cluster_cpus + 1e-9:
        raise RunError(f"scale: {replicas} replicas x {sc.replica_cpus} CPU + {verifiers} verifiers x "
                       f"{sc.verifier_cpus} CPU need {need:g} CPUs; the cluster has {cluster_cpus:g} "
                       f"(lower scale.replica_cpus / scale.verifier_cpus)")
    return Plan(replicas, gpus, sc.replica_cpus, verifiers, sc.verifier_cpus, max(1, nodes), spans)


@dataclass
class _RayHandle:
    actor: Any
    pg: Any = None
    nodes: list = field(default_factory=list)  # EngineNode actors: ranks 1.. of an engine spanning nodes


class RayBackend(ReplicaBackend):
    def __init__(self, job: JobConfig, p: Plan, verifiers: list, actor_cls: type | None = None, budget=None):
        self.actor_cls = actor_cls or EngineReplica
        self.budget = budget  # a BudgetActor shared by the replicas (adaptive sampling), or None
        self.job_json = job.model_dump_json()
        self.plan = p
        self.verifiers = verifiers
        self.timeout_s = job.scale.start_timeout_s
        self.max_calls = job.scale.inflight_chunks + 2

    async def start(self, index: int) -> _RayHandle:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        p = self.plan
        opts: dict[str, Any] = {"num_cpus": p.replica_cpus, "num_gpus": p.gpus_per_bundle,
                                "max_concurrency": self.max_calls}
        handle = _RayHandle(None)
        if not p.gpus_per_replica:
            opts["scheduling_strategy"] = "SPREAD"  # CPU engines: one per node before doubling up
        if p.gpus_per_replica:
            # one bundle: all of a replica's GPUs on one node, for tensor parallelism;
            # a replica larger than a node: one bundle per node, each on its own node
            spread = p.nodes_per_replica > 1
            bundles = [{"GPU": p.gpus_per_bundle, "CPU": p.replica_cpus}] * p.nodes_per_replica
            handle.pg = placement_group(bundles, strategy="STRICT_SPREAD" if spread else "STRICT_PACK")
            try:
                await asyncio.wait_for(handle.pg.ready(), self.timeout_s)
            except asyncio.TimeoutError:
                ray.util.remove_placement_group(handle.pg)
                where = f"{p.nodes_per_replica} nodes with {p.gpus_per_bundle} GPU(s) each" if spread else \
                    f"a node with {p.gpus_per_replica} GPU(s)"
                raise RunError(f"replica {index}: the cluster could not give {where} within "
                               f"{self.timeout_s:g} s (scale.start_timeout_s)") from None
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(handle.pg, placement_group_bundle_index=0)
        handle.actor = ray.remote(self.actor_cls).options(**opts).remote(self.job_json, index, self.verifiers,
                                                                            self.plan.replicas_per_node, self.budget)
        try:
            spans = None
            if p.nodes_per_replica > 1:
                spans = await self._start_nodes(handle, index)
            ready = handle.actor.start.remote(spans) if spans else handle.actor.start.remote()
            info = await asyncio.wait_for(ready, self.timeout_s)
        except BaseException:
            await self.kill(handle)
            raise
        node = f", Ray node {info['node_id'][:12]}" if info.get("node_id") else ""
        if handle.nodes:
            node += f", spanning nodes {', '.join(n[:12] for n in spans['node_ids'])}"
        log.info(f"replica {index} ready on {info['node']}{node} (pid {info['pid']}"
                 f"{', GPUs ' + info['gpus'] if info['gpus'] else ''})")
        return handle

    async def _start_nodes(self, handle: _RayHandle, index: int) -> dict[str, Any]:
        """Ranks 1.. of the replica's engine, one per bundle, told where rank 0
        (the replica actor, bundle 0) will listen for them."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        p = self.plan
        addr, head_node = await asyncio.wait_for(handle.actor.head_address.remote(), self.timeout_s)
        ids = [head_node]
        for rank in range(1, p.nodes_per_replica):
            strategy = PlacementGroupSchedulingStrategy(handle.pg, placement_group_bundle_index=rank)
            actor = ray.remote(EngineNode).options(num_cpus=min(p.replica_cpus, 0.1), num_gpus=p.gpus_per_bundle,
                                                   scheduling_strategy=strategy).remote(self.job_json, index, rank)
            handle.nodes.append(actor)
            ids.append(await asyncio.wait_for(actor.start.remote(p.nodes_per_replica, addr), self.timeout_s))
        return {"nnodes": p.nodes_per_replica, "dist_init_addr": addr, "node_ids": ids}

    async def process(self, handle: _RayHandle, chunk: Chunk) -> dict[str, Any]:
        return await handle.actor.process_chunk.remote(chunk.shard, chunk.problems)

    async def kill(self, handle: _RayHandle) -> None:
        import ray

        for actor in [*handle.nodes, handle.actor]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        if handle.pg is not None:
            ray.util.remove_placement_group(handle.pg)

    async def close(self, handles: list[_RayHandle]) -> None:
        # a clean stop lets managed servers shut down their process groups
        stops = [h.actor.stop.remote() for h in handles if h.actor is not None]
        if stops:
            await asyncio.wait([asyncio.ensure_future(_await(s)) for s in stops], timeout=60)
        await super().close(handles)


async def _await(ref):
    return await ref
