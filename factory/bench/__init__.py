"""Benchmarks that print figures (speed targets are checked here, not in tests)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from factory import assets
from factory.bench.sim_cluster import SimBackend
from factory.config import JobConfig, PromptConfig, VerifyConfig, resolve_paths
from factory.engines.managed import free_port
from factory.engines.platform import INPROCESS_ENV, cpu_has_native_bf16, resolve_dtype, single_process_cpu_engine
from factory.logs import quiet
from factory.metrics import RunStats
from factory.models import ensure_model
from factory.pipeline import run_job
from factory.prompts import PromptRenderer
from factory.scale import Coordinator, Plan, RayBackend, connect, make_chunks
from factory.sources.decontaminate import LABELLED, RULES, SHIPPED, Decontaminator
from factory.store.shards import ShardStore
from factory.verify.cascade import Cascade


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Distinct (gold, R1-style generation) pairs of mixed kinds.

    Distinct on purpose: Math-Verify caches parses, and repeated inputs would
    overstate its speed.
    """
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        a, b = rng.randint(2, 10_000), rng.randint(2, 997)
        k = rng.choice([1, 1, 2, 3])
        kind = i % 6
        if kind == 0:
            gold, ans = f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{a * k}}}{{{b * k}}}"
        elif kind == 1:
            gold, ans = str(a + b), str(a + b + rng.choice([0, 0, 1]))
        elif kind == 2:
            gold, ans = f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"
        elif kind == 3:
            gold, ans = f"({a}, {b})", f"({a},{b + rng.choice([0, 1])})"
        elif kind == 4:
            gold, ans = f"x^2 + {a}x + {b}", f"x^{{2}}+{a}x+{b}"
        else:
            gold, ans = f"{a}.{b}", f"{a}.{b}"
        think = f"<think>\nLet me compute step {i}: {a} and {b}. " + "We check the arithmetic. " * rng.randint(5, 40) + "\n</think>\n\n"
        pairs.append((gold, f"{think}So the answer is $\\boxed{{{ans}}}$."))
    return pairs


def _raw_in_process(pairs) -> tuple[float, int]:
    """Math-Verify as a user would call it, in this process, one core."""
    from math_verify import LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    t = time.perf_counter()
    correct = 0
    for gold, gen in pairs:
        g = parse(f"${gold}$", extraction_config=[LatexExtractionConfig()])
        correct += bool(verify(g, parse(gen)))
    return time.perf_counter() - t, correct


async def _ours(pairs, workers: int, warmup) -> tuple[float, int]:
    cascade = Cascade(VerifyConfig(workers=workers))

    def verify_all(some):
        return asyncio.gather(*(cascade.verify(g, None, [gen]) for g, gen in some))

    try:
        # Workers of a run live for thousands of pairs; a fresh one first fills
        # its parser caches (ANTLR's DFA), which raw Math-Verify in this process
        # has already done. Warm both on the same other pairs, untimed.
        await verify_all(warmup)
        t = time.perf_counter()
        results = await verify_all(pairs)
        return time.perf_counter() - t, sum(r[0].correct for r in results)
    finally:
        cascade.close()


@dataclass
class VerifyBench:
    pairs: int
    raw_pairs_per_s: float
    ours_1_pairs_per_s: float
    ours_n_pairs_per_s: float
    workers: int
    raw_correct: int
    ours_correct: int

    @property
    def ratio_per_core(self) -> float:
        return self.ours_1_pairs_per_s / self.raw_pairs_per_s


def bench_verify(n: int = 1000, workers: int = 2, seed: int = 0, rounds: int = 3) -> VerifyBench:
    # The same pairs for all three paths within a round: our workers are fresh
    # processes, so none profits from another run's parse cache. Rounds take new
    # pairs (raw Math-Verify's in-process cache would remember old ones) and
    # interleave the paths, so a machine whose load drifts skews all alike.
    raw_t = one_t = many_t = 0.0
    raw_ok = one_ok = 0
    warmup = synthetic_pairs(50 * workers, seed + 10_000)
    _raw_in_process(warmup)
    for r in range(rounds):
        pairs = synthetic_pairs(n, seed + r)
        t, ok = _raw_in_process(pairs)
        raw_t, raw_ok = raw_t + t, raw_ok + ok
        t, ok = asyncio.run(_ours(pairs, 1, warmup))
        one_t, one_ok = one_t + t, one_ok + ok
        many_t += asyncio.run(_ours(pairs, workers, warmup))[0]
    total = n * rounds
    return VerifyBench(total, total / raw_t, total / one_t, total / many_t, workers, raw_ok, one_ok)


def synthetic_source(path, rows: int, seed: int = 0) -> None:
    """A jsonl source with exact (~2%) and near (~2%) duplicates and a few broken lines."""
    rng = random.Random(seed)
    subjects = ["apples", "marbles", "coins", "books", "tickets", "stamps", "pencils", "cards"]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            r = rng.random()
            if r < 0.001:
                fh.write("{broken json\n")
                continue
            j = i - rng.randint(1, 50) if (r < 0.04 and i > 100) else i
            a, b = (j * 7919) % 9973 + 2, (j * 104729) % 997 + 3
            s = subjects[j % len(subjects)]
            problem = (f"Problem {j}: A shop sells {a} {s} on Monday and {b} more {s} on Tuesday than on Monday. "
                       f"Each of the {s} costs {j % 17 + 1} dollars. How much money does the shop take over the two days?")
            if 0.02 <= r < 0.04 and i > 100:  # near duplicate: one word changed
                problem = problem.replace("Problem", "Question", 1)
            fh.write(json.dumps({"problem": problem, "answer": str((2 * a + b) * (j % 17 + 1)), "source": "synthetic"}) + "\n")


def bench_prepare(rows: int, workdir) -> dict:
    """Prepare a synthetic source in a child process; report time and peak RSS."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"synthetic-{rows}.jsonl"
    if not src.exists():
        synthetic_source(src, rows)
    code = (
        "import json, resource, sys, time\n"
        "from factory.config import SourceConfig\n"
        "from factory.sources.prepare import prepare_to_dir\n"
        "t = time.perf_counter()\n"
        "r = prepare_to_dir(SourceConfig(path=sys.argv[1]), __import__('pathlib').Path(sys.argv[2]))\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " **r.to_json()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(workdir / "out")], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _job(tmp, source, out, engine: dict, sampling: dict, verify: bool):
    job = JobConfig.model_validate({
        "name": "bench", "source": {"path": str(source), "decontaminate": {"enabled": False}},
        "engine": engine, "sampling": sampling, "verify": {"enabled": verify},
        "output": {"dir": str(out), "shard_rows": 1000},
    })
    return resolve_paths(job, tmp)


def bench_overhead(problems: int = 4000, concurrencies=(32, 256), workdir=None) -> list[dict]:
    """Generations/s through the whole pipeline against an instant fake server
    in its own process: our overhead, not an engine's speed."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="factory-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "problems.jsonl"
    with open(src, "w") as fh:
        for i in range(problems):
            fh.write(json.dumps({"problem": f"Problem {i}: compute {i} + {i * 7} and reduce modulo 97.", "answer": str((8 * i) % 97)}) + "\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "factory.bench.instant_openai", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for conc in concurrencies:
            out = tmp / f"out-{conc}"
            job = _job(tmp, src, out, {"backend": "openai", "base_url": f"http://127.0.0.1:{port}", "model": "fake",
                                       "max_concurrency": conc}, {"n": 2, "max_tokens": 64}, verify=False)
            with quiet():
                stats = run_job(job).stats
            results.append({"concurrency": conc, "problems": stats.problems_done, "generations": stats.generations,
                            "seconds": round(stats.elapsed_s, 2), "generations_per_s": round(stats.generations_per_s)})
    finally:
        server.kill()
        server.wait()
    return results


def bench_engine(problems: int = 32, n: int = 2, max_tokens: int = 128, workdir=None, backend: str = "vllm-offline") -> dict:
    """The factory (full pipeline: rendering, client, extraction, verification,
    Parquet) against raw vLLM (`LLM.chat` on all prompts at once) on the same
    prompts, model and sampling. `backend` picks the factory's engine path."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="factory-bench-engine-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (assets.root() / "jobs" / "data" / "numina-sample.jsonl").read_text().splitlines()][:problems]
    src = tmp / "problems.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sampling = {"n": n, "max_tokens": max_tokens, "temperature": 0.6, "top_p": 0.95}
    job = _job(tmp, src, tmp / "out", {"backend": backend, "model": "smollm2-135m", "max_concurrency": problems},
               sampling, verify=True)
    with quiet():
        factory_stats = run_job(job).stats

    # raw vLLM with the engine settings the factory uses here, so the ratio is our overhead alone
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    single = single_process_cpu_engine()
    if single:
        os.environ.update(INPROCESS_ENV)
    from vllm import LLM, SamplingParams

    llm = LLM(model=ensure_model("smollm2-135m"), dtype=resolve_dtype("auto"), max_model_len=2048, seed=0,
              enforce_eager=True, **({"distributed_executor_backend": "uni"} if single else {}))
    renderer = PromptRenderer(PromptConfig())
    convs = [renderer.messages(r) for r in rows]
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=0.6, top_p=0.95)
    t = time.perf_counter()
    outs = llm.chat(convs, sampling_params=params, use_tqdm=False)
    raw_s = time.perf_counter() - t
    raw_tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    raw_tps = raw_tokens / raw_s
    return {"problems": problems, "n": n, "max_tokens": max_tokens, "backend": backend,
            "factory_tokens": factory_stats.completion_tokens, "factory_s": round(factory_stats.elapsed_s, 1),
            "factory_tokens_per_s": round(factory_stats.tokens_per_s, 1),
            "raw_tokens": raw_tokens, "raw_s": round(raw_s, 1), "raw_tokens_per_s": round(raw_tps, 1),
            "ratio": round(factory_stats.tokens_per_s / raw_tps, 3)}


_DTYPE_CHILD = """
import json, os, sys, time
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    model, dtype, prompts, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t = time.perf_counter()
    llm = LLM(model=model, dtype=dtype, max_model_len=2048, seed=0, enforce_eager=True)
    start = time.perf_counter() - t
    convs = [[{"role": "user", "content": f"Write a short story, number {i}, about a cat."}] for i in range(prompts)]
    params = SamplingParams(max_tokens=tokens, temperature=0.6, ignore_eos=True)
    llm.chat(convs[:2], params, use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.chat(convs, params, use_tqdm=False)
    s = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    print("RESULT " + json.dumps({"dtype": dtype, "start_s": round(start, 1), "tokens": n, "tokens_per_s": round(n / s, 1)}))
"""


def bench_dtype(dtypes=("float32", "bfloat16"), prompts: int = 16, tokens: int = 128) -> dict:
    """vLLM offline tokens/s of the embedded model per dtype, one fresh process
    each, side by side; and what `dtype: auto` picks on this machine."""
    model = ensure_model("smollm2-135m")
    rows = []
    for dtype in dtypes:
        proc = subprocess.run([sys.executable, "-c", _DTYPE_CHILD, model, dtype, str(prompts), str(tokens)],
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"vLLM with dtype {dtype} failed: {proc.stderr[-1500:]}")
        rows.append(json.loads(line[len("RESULT "):]))
    return {"rows": rows, "auto": resolve_dtype("auto"), "native_bf16": cpu_has_native_bf16()}


def _sim_problems(stop_after_s: float | None = None, limit: int | None = None):
    """Problem stubs, as many as asked or until `stop_after_s` of wall time."""
    t0 = time.monotonic()
    i = 0
    while (limit is None or i < limit) and (stop_after_s is None or time.monotonic() - t0 < stop_after_s):
        yield {"uuid": f"sim-{i:09d}"}
        i += 1


def _drive_sim(backend, nodes: int, chunk: int, inflight: int, problems, workdir) -> dict:
    """The real coordinator and the driver's real per-chunk work (manifest
    append with fsync, stats merge) against a simulated cluster."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = ShardStore(Path(tmp))
        store.open()
        stats = RunStats()
        done_at: list[tuple[float, int]] = []
        seq = itertools.count()

        def on_result(c, summary):
            store.commit(summary["file"], summary["uuids"])
            stats.merge(summary["stats"])
            done_at.append((time.monotonic(), len(summary["uuids"])))

        coord = Coordinator(backend, nodes, make_chunks(problems, chunk, lambda: next(seq)), on_result,
                            inflight)
        t0, c0 = time.monotonic(), time.process_time()
        with quiet():
            asyncio.run(coord.run())
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "chunks": len(done_at), "problems": sum(n for _, n in done_at),
            "done_at": [t - t0 for t, _ in done_at], "sizes": [n for _, n in done_at]}


def bench_scale(nodes: int = 512, rate: float = 25.0, n: int = 4, chunk_sizes=(4, 16, 64, 256),
                seconds: float = 12.0, spread: float = 0.4, inflight: int = 2, workdir=None) -> dict:
    """Can one driver keep `nodes` replicas busy at `rate` answers/s each?

    1. Capacity: replicas that finish instantly, so the figure is the most
       chunks/s the coordination path (scheduling, manifest fsync, stats)
       handles; times chunk size x n it is the most answers/s it can feed.
    2. Live: replicas at `rate` answers/s with a log-normal spread, for
       `seconds`; answers/s in the steady part against nodes x rate.
    """
    capacity = []
    for size in chunk_sizes:
        r = _drive_sim(SimBackend(rate=rate, n=n, time_scale=0.0), nodes, size, inflight,
                       _sim_problems(limit=max(size * 4000, 100_000)), workdir)
        cps = r["chunks"] / r["wall_s"]
        need = nodes * rate / (size * n)
        capacity.append({"chunk": size, "chunks_per_s": round(cps), "max_answers_per_s": round(cps * size * n),
                         "needed_chunks_per_s": round(need, 1), "headroom": round(cps / need, 1)})
    # the live run: the chunk size where one chunk takes a node ~2.5 s, so the
    # steady state shows within `seconds` (larger chunks only lighten the driver)
    size = max(1, round(2.5 * rate / n))
    backend = SimBackend(rate=rate, n=n, spread=spread)
    r = _drive_sim(backend, nodes, size, inflight, _sim_problems(stop_after_s=seconds), workdir)
    warm = 2 * size * n / rate  # two chunks deep: the queues are full by then
    window = [k for t, k in zip(r["done_at"], r["sizes"]) if warm <= t <= seconds]
    achieved = sum(window) * n / (seconds - warm)
    live = {"nodes": nodes, "chunk": size, "target_answers_per_s": nodes * rate, "answers_per_s": round(achieved),
            "efficiency": round(achieved / (nodes * rate), 3), "driver_cpu_share": round(r["cpu_s"] / r["wall_s"], 3),
            "chunks": r["chunks"], "seconds": round(r["wall_s"], 1)}
    return {"capacity": capacity, "live": live}


class NullReplica:
    """A Ray replica that does no work: measures Ray's round trip per chunk."""

    def __init__(self, *args):
        pass

    async def start(self) -> dict:
        return {"node": "local", "pid": os.getpid(), "gpus": ""}

    async def process_chunk(self, shard: str, problems: list) -> dict:
        return {"file": f"data/{shard}", "uuids": [p["uuid"] for p in problems], "stats": {}}

    async def stop(self) -> None:
        pass


def bench_scale_ray(replicas: int = 8, chunk: int = 64, chunks: int = 3000, inflight: int = 2, workdir=None) -> dict:
    """Chunks/s through the real RayBackend on a local cluster (no-op replicas)."""
    import ray


    with quiet():
        owned = connect(None)
    try:
        job = JobConfig.model_validate({"source": {"path": "-"}, "scale": {"mode": "ray", "inflight_chunks": inflight}})
        cpus = min(0.1, ray.cluster_resources().get("CPU", 1) / (replicas + 1))
        backend = RayBackend(job, Plan(replicas, 0, cpus, 0, 0.0), [], actor_cls=NullReplica)
        r = _drive_sim(backend, replicas, chunk, inflight, _sim_problems(limit=chunk * chunks), workdir)
    finally:
        if owned:
            ray.shutdown()
    cps = r["chunks"] / r["wall_s"]
    return {"replicas": replicas, "chunk": chunk, "chunks_per_s": round(cps), "problems_per_s": round(cps * chunk),
            "driver_cpu_share": round(r["cpu_s"] / r["wall_s"], 2)}


def bench_decontam(rows: int = 20_000, benchmarks: list[str] | None = None, seed: int = 0) -> dict:
    """Both decontamination rules on factory/data/decontam/labelled.jsonl (caught / flagged per split
    and kind, against all shipped benchmarks) and their speed on `rows` synthetic problems."""
    labelled = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    rules = {r: Decontaminator(list(SHIPPED), 8, rule=r) for r in RULES}
    total, flagged, right = Counter(), Counter(), Counter()
    for row in labelled:
        key = (row["split"], row["kind"])
        total[key] += 1
        for name, deco in rules.items():
            hit = deco.check(row["problem"])
            if hit:
                flagged[(name, *key)] += 1
                right[(name, *key)] += hit.label == row.get("benchmark_id")
    table = {split: {kind: {"rows": total[(split, kind)],
                            **{name: {"flagged": flagged[(name, split, kind)], "right_item": right[(name, split, kind)]}
                               for name in rules}}
                     for kind in ("copied", "reworded", "clean_similar")}
             for split in ("dev", "heldout")}
    # speed: the bench-prepare synthetic source, and MATH-style rows (the clean labelled problems, numbers varied)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "synthetic.jsonl"
        synthetic_source(src, rows, seed)
        synthetic = [json.loads(line)["problem"] for line in src.read_text(encoding="utf-8").splitlines() if line.startswith("{\"")]
    rng = random.Random(seed)
    clean = [r["problem"] for r in labelled if r["kind"] == "clean_similar"]
    mathy = [rng.choice(clean).replace("3", str(rng.randint(10, 99)), 1) for _ in range(rows)]
    speed = {}
    for name in RULES:
        t = time.perf_counter()
        deco = Decontaminator(benchmarks or ["math500", "aime2024", "aime2025", "amc2023"], 8, rule=name)
        speed[name] = {"init_s": round(time.perf_counter() - t, 2)}
        for label, data in (("synthetic", synthetic), ("math_style", mathy)):
            best = 0.0
            for _ in range(3):  # best of 3, in CPU seconds: the machine may be shared
                t = time.process_time()
                hits = sum(1 for p in data if deco.check(p))
                best = max(best, len(data) / max(time.process_time() - t, 1e-9))
            speed[name][label] = {"rows": len(data), "rows_per_s": round(best), "flagged": hits}
    return {"labelled": table, "speed": speed}
