"""`factory bench adaptive`: verified traces per generation, per token and
per engine-hour, adaptive sampling against the fixed n=4 recipe.

Two engines, each arm through the factory's own `ProblemWorker` (the code a
run uses), so what is measured is the policy in `factory/sampling.py`:

- **simulated**: per-problem solve rates drawn from a stated mixture close to
  OpenR1-Math's (about 55% of problems with a correct trace among four, many
  solved by all four, wrong traces longer than right ones, some cut off at
  the token limit); verification is the simulation's own ground truth.
- **real**: the CPU vLLM engine (SmolLM2-135M) on small arithmetic problems
  it sometimes solves, verified by the real cascade (Math-Verify).
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from factory.config import AdaptiveConfig, JobConfig
from factory.engines.base import Completion, Engine, GenerationResult
from factory.metrics import RunStats
from factory.verify.cascade import GenVerdict
from factory.worker import ProblemWorker

# The simulated mixture (solve rate p per sample, by share of problems)
HOPELESS, EASY, MIDDLE = 0.38, 0.35, 0.27  # p = 0; p = 0.95; p ~ U(0.05, 0.6)
MAX_TOKENS = 16384
RIGHT_TOKENS = (4000, 1500)  # mean, sd
WRONG_TOKENS = (7000, 2500)
WRONG_CUT_OFF = 0.3  # share of wrong traces that run to the token limit


def solve_rate(k: int, seed: int = 0) -> float:
    u = random.Random(f"p:{seed}:{k}").random()
    if u < HOPELESS:
        return 0.0
    if u < HOPELESS + EASY:
        return 0.95
    return random.Random(f"m:{seed}:{k}").uniform(0.05, 0.6)


def expected_coverage(samples: int = 4) -> float:
    """P(at least one correct of `samples`) under the mixture."""
    lo, hi = 0.05, 0.6
    # the integral of 1 - (1 - p)^s over U(lo, hi)
    middle = 1 - ((1 - lo) ** (samples + 1) - (1 - hi) ** (samples + 1)) / ((samples + 1) * (hi - lo))
    return EASY * (1 - 0.05 ** samples) + MIDDLE * middle


class SimEngine(Engine):
    """Answers `Problem K` with the right answer at that problem's solve
    rate. The j-th sample a problem gets is the same draw in every arm (a
    paired comparison: the arms differ only in which samples they ask for)."""

    def __init__(self, cfg, sampling, seed: int = 0):
        super().__init__(cfg, sampling)
        self.seed = seed
        self.drawn: dict[int, int] = {}  # samples handed out per problem so far

    async def generate(self, messages, sampling=None) -> GenerationResult:
        s = sampling or self.sampling
        k = int(messages[-1]["content"].split("Problem ", 1)[1].split(":", 1)[0])
        p = solve_rate(k, self.seed)
        comps = []
        start = self.drawn.get(k, 0)
        self.drawn[k] = start + s.n
        for j in range(start, start + s.n):
            rng = random.Random(f"{self.seed}:{k}:{j}")
            if rng.random() < p:
                tokens = max(200, int(rng.gauss(*RIGHT_TOKENS)))
                comps.append(Completion(f"<think>...</think> \\boxed{{{k}}}", "stop", min(tokens, MAX_TOKENS - 1)))
            elif rng.random() < WRONG_CUT_OFF:
                comps.append(Completion("<think>...", "length", MAX_TOKENS))
            else:
                tokens = max(200, int(rng.gauss(*WRONG_TOKENS)))
                comps.append(Completion("<think>...</think> \\boxed{-1}", "stop", min(tokens, MAX_TOKENS - 1)))
        return GenerationResult(comps, prompt_tokens=100)


class SimCascade:
    """The simulation's ground truth in place of Math-Verify (measured on its own in `bench verify`)."""

    judge_model = None

    async def verify(self, gold, problem, texts, finish_reasons):
        return [GenVerdict(gold, "ok", f"\\boxed{{{gold}}}" in t and f == "stop") for t, f in zip(texts, finish_reasons)]


@dataclass
class Arm:
    name: str
    problems: int
    generations: int
    tokens: int
    covered: int  # problems with at least one verified trace
    seconds: float = 0.0

    @property
    def per_1k_generations(self) -> float:
        return 1000 * self.covered / self.generations if self.generations else 0.0

    @property
    def per_million_tokens(self) -> float:
        return 1e6 * self.covered / self.tokens if self.tokens else 0.0

    @property
    def per_engine_hour(self) -> float:
        return 3600 * self.covered / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "coverage": round(self.covered / self.problems, 4),
                "per_1k_generations": round(self.per_1k_generations, 2),
                "per_million_tokens": round(self.per_million_tokens, 3),
                "per_engine_hour": round(self.per_engine_hour, 1)}


def _sim_job(adaptive: AdaptiveConfig | None, n: int) -> JobConfig:
    return JobConfig.model_validate({"source": {"path": "sim.jsonl"}, "sampling": {
        "n": n, "max_tokens": MAX_TOKENS, "seed": 1, "adaptive": adaptive.model_dump() if adaptive else None},
        "engine": {"backend": "openai", "base_url": "http://sim.invalid"}})


async def _sim_arm(name: str, job: JobConfig, problems: int, seed: int) -> Arm:
    engine = SimEngine(job.engine, job.sampling, seed)
    worker = ProblemWorker(job, engine, SimCascade())
    stats = RunStats()
    rows = await asyncio.gather(*(worker.process({"uuid": f"sim-{k}", "problem": f"Problem {k}: sim", "answer": str(k)},
                                                 stats) for k in range(problems)))
    return Arm(name, problems, sum(len(r["generations"]) for r in rows), sum(sum(r["completion_tokens"]) for r in rows),
               sum(r["correctness_count"] > 0 for r in rows))


ARMS = {
    "fixed n=4": (None, 4),
    "adaptive one_correct, 1 then 1, cap 4": (AdaptiveConfig(first=1, batch=1), 4),
    "adaptive one_correct, 1 then 1, cap 6": (AdaptiveConfig(first=1, batch=1, max_samples=6), 4),
}


def bench_adaptive_sim(problems: int = 4000, seed: int = 0) -> dict:
    arms = [asyncio.run(_sim_arm(name, _sim_job(policy, n), problems, seed)) for name, (policy, n) in ARMS.items()]
    return {"problems": problems, "expected_coverage_4": round(expected_coverage(4), 3), "arms": _compare(arms)}


def _compare(arms: list[Arm]) -> list[dict]:
    base = arms[0]
    out = []
    for a in arms:
        d = a.as_dict()
        for key in ("per_1k_generations", "per_million_tokens", "per_engine_hour"):
            ref = getattr(base, key)
            d[f"{key}_x"] = round(getattr(a, key) / ref, 2) if ref else None
        out.append(d)
    return out


# Small arithmetic the 135M model sometimes gets right (its maths is poor).
def arithmetic_rows(k: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in range(1, 30) for b in range(1, 30)], k)  # distinct: dedup keeps them all
    return [{"problem": f"What is {a} + {b}?", "answer": str(a + b), "uuid": f"add-{i}"} for i, (a, b) in enumerate(pairs)]


def bench_adaptive_real(problems: int = 96, max_tokens: int = 48, concurrency: int = 16, workdir=None) -> dict:
    """Fixed n=4 against adaptive (one_correct, cap 4) on the CPU vLLM engine,
    the whole pipeline. More problems than are in flight, and continuous
    batching, so the engine stays busy as it would on a long run: later
    rounds then fill the room finished problems leave."""
    from factory.bench import _job, quiet
    from factory.pipeline import run_job

    tmp = Path(workdir or tempfile.mkdtemp(prefix="factory-bench-adaptive-"))
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "problems.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_rows(problems)))
    arms = []
    for name, (policy, n) in list(ARMS.items())[:2]:
        sampling = {"n": n, "max_tokens": max_tokens, "temperature": 0.8, "top_p": 0.95,
                    "adaptive": policy.model_dump() if policy else None}
        job = _job(tmp, src, tmp / f"out-{len(arms)}", {"backend": "vllm-offline", "model": "smollm2-135m",
                                                        "max_concurrency": concurrency, "batching": "continuous"},
                   sampling, verify=True)
        job.prompt.template = str(Path(job.prompt.template).with_name("short-answer.jinja"))
        t = time.perf_counter()
        with quiet():
            stats = run_job(job).stats
        arms.append(Arm(name, stats.problems_done, stats.generations, stats.completion_tokens,
                        stats.problems_with_correct, round(stats.elapsed_s or time.perf_counter() - t, 2)))
    return {"problems": problems, "max_tokens": max_tokens, "arms": _compare(arms)}
