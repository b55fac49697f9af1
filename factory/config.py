"""Typed job configuration.

A job file is YAML validated by these models. Every model forbids unknown
keys so that a typo is an error naming the key, never a silently ignored
setting. Relative paths are resolved against the job file's folder, then
against the shipped assets (prompts/, jobs/ ...), so a job file works from
any working directory and from an installed wheel.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory import assets
from factory.think import THINK_CLOSE


class ConfigError(Exception):
    """A job file problem, worded for the user (one line, names key or path)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DedupConfig(_Strict):
    """Exact (normalized text) and near-duplicate (MinHash over word shingles) removal."""

    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.85, gt=0.0, le=1.0, description="estimated Jaccard at or above which rows are near duplicates")
    num_perm: int = Field(default=64, ge=8, le=512)
    bands: int = Field(default=16, ge=1)
    shingle_words: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _bands_divide(self) -> "DedupConfig":
        if self.num_perm % self.bands:
            raise ValueError(f"dedup.num_perm ({self.num_perm}) must be a multiple of dedup.bands ({self.bands})")
        return self


class DecontamConfig(_Strict):
    """n-gram overlap against evaluation benchmarks (open-r1 used 8-grams)."""

    enabled: bool = True
    benchmarks: list[str] = Field(default_factory=lambda: ["math500", "aime2024", "aime2025", "amc2023"],
                                  description="shipped names (factory/data/benchmarks) or jsonl paths")
    ngram: int = Field(default=8, ge=3)
    rule: Literal["evidence", "ngram"] = Field(
        default="evidence", description="evidence: enough informative shared text with one item, instruction "
        "boilerplate ignored; ngram: any shared n-gram (open-r1)")


class SourceConfig(_Strict):
    """Where problems come from, which columns hold what, and which rows to keep."""

    path: Path | None = Field(default=None, description="jsonl(.gz/.zst) or parquet: a file, a folder or a glob")
    dataset: str | None = Field(default=None, description="a Hub dataset name (or local dataset folder), streamed")
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    problem_column: str = "problem"
    answer_column: str = "answer"
    solution_column: str = "solution"
    source_column: str = "source"
    problem_type_column: str = "problem_type"
    question_type_column: str = "question_type"
    limit: int | None = Field(default=None, ge=1, description="read at most this many rows")
    require_answer: bool = True
    min_problem_chars: int = Field(default=1, ge=1)
    max_problem_chars: int = Field(default=20_000, ge=1)
    include_sources: list[str] | None = None
    include_problem_types: list[str] | None = None
    include_question_types: list[str] | None = None
    sample: int | None = Field(default=None, ge=1, description="keep a random sample of this many problems")
    seed: int = 0
    dedup: DedupConfig = DedupConfig()
    decontaminate: DecontamConfig = DecontamConfig()

    @model_validator(mode="after")
    def _one_origin(self) -> "SourceConfig":
        if (self.path is None) == (self.dataset is None):
            raise ValueError("source: give exactly one of source.path (local files) or source.dataset (Hub dataset)")
        return self

    @property
    def label(self) -> str:
        """The source as messages name it: a file name, or a Hub dataset id."""
        if self.dataset is not None:
            return self.dataset + (f" ({self.config})" if self.config else "")
        return self.path.name


class PromptConfig(_Strict):
    """The user turn sent to the model; the engine applies the chat template."""

    template: str = "r1-math"
    system: str | None = None


class BudgetForcingConfig(_Strict):
    """Cap the thinking, then force the final answer (s1-style budget forcing).

    A generation still thinking after `max_thinking_tokens` is cut there; the
    `cue` (end-of-think marker and an answer prompt) is appended and the model
    continues for at most `answer_max_tokens`."""

    max_thinking_tokens: int = Field(ge=1)
    answer_max_tokens: int = Field(default=256, ge=1)
    cue: str = f"\n{THINK_CLOSE}\n\n**Final Answer**\n\\boxed{{"


class AdaptiveConfig(_Strict):
    """Sample in rounds, and only the problems whose goal is not met yet
    (factory/sampling.py): the most verified traces per engine-hour."""

    goal: Literal["one_correct", "correct_and_wrong", "fixed"] = Field(
        default="one_correct", description="one_correct: one verified trace (SFT, distillation); correct_and_wrong: "
        "one verified and one wrong (DPO pairs, RL); fixed: sampling.n, in rounds")
    first: int = Field(default=1, ge=1, le=64, description="samples per problem in the first round")
    batch: int = Field(default=1, ge=1, le=64, description="samples per problem in each later round")
    max_samples: int | None = Field(default=None, ge=1, le=256, description="per-problem cap; unset: sampling.n")
    skip_solved: bool = Field(default=True, description="stop sampling a problem every first-round sample solved")
    budget_samples: int | None = Field(default=None, ge=0, description="run-wide cap on samples after the first round")
    budget_tokens: int | None = Field(default=None, ge=0, description="run-wide cap on tokens generated after the first round")


class SamplingConfig(_Strict):
    n: int = Field(default=2, ge=1, le=64)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.6, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: list[str] | None = None
    budget_forcing: BudgetForcingConfig | None = None
    seed: int | None = Field(default=None, description="a seed sent with each request (with adaptive sampling: one "
                             "per problem and round), for reproducible samples where the engine honours it (not vLLM "
                             "on CPU, which crashes on per-request seeds: there it is not sent)")
    adaptive: AdaptiveConfig | None = None

    @property
    def cap(self) -> int:
        """Samples one problem may get."""
        return (self.adaptive.max_samples or self.n) if self.adaptive else self.n

    @model_validator(mode="after")
    def _check_adaptive(self) -> "SamplingConfig":
        a = self.adaptive
        if a is not None and a.first > self.cap:
            raise ValueError(f"sampling.adaptive.first ({a.first}) is above the per-problem cap ({self.cap}: "
                             "sampling.adaptive.max_samples, else sampling.n)")
        return self


# the backends whose one engine may span nodes (managed servers launched per rank)
MULTINODE_BACKENDS = ("vllm-server", "sglang-server")


class EngineConfig(_Strict):
    """Which backend generates, and how hard to drive it."""

    backend: Literal["vllm-server", "vllm-offline", "sglang-server", "sglang-offline", "openai"] = "vllm-server"
    model: str = "smollm2-135m"
    served_model_name: str | None = None
    base_url: str | None = Field(default=None, description="for backend=openai")
    api_key_env: str = "OPENAI_API_KEY"
    chat_template: str | None = Field(default=None, description="a chat template file, or a name in prompts/chat/ "
                                      "(deepseek-r1): served with it and used to continue partial answers")
    tokenizer: str | None = Field(default=None, description="backend openai: the model's tokenizer (hub id or folder), "
                                  "to continue partial answers as raw text; managed backends use the model's own")
    max_concurrency: int = Field(default=32, ge=1)
    request_timeout_s: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    max_model_len: int = Field(default=2048, ge=64)
    dtype: str = Field(default="auto", description="auto: the engine's choice on GPU; on CPU bf16 only where the CPU computes it natively, else float32")
    seed: int = 0
    tensor_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    enforce_eager: bool | None = Field(default=None, description="skip graph capture/compilation; unset: eager on "
                                       "CPU (faster start), CUDA graphs on GPU (faster decoding)")
    max_num_seqs: int | None = Field(default=None, ge=1, description="sequences the engine schedules at once; unset: "
                                     "on CPU max_concurrency x n (at least 16), on GPU the engine's own throughput default")
    batching: Literal["auto", "static", "continuous"] = Field(
        default="auto", description="vllm-offline: continuous (vLLM's async engine: each request joins the running "
        "batch) or static (LLM.chat on what queued up); auto: continuous on GPU, static on CPU")
    max_restarts: int = Field(default=3, ge=0, description="restarts of a managed server that dies or hangs mid-run, or rebuilds of an in-process engine that dies")
    hang_timeout_s: float = Field(default=120.0, gt=0, description="a managed server failing its health check this long is restarted")
    health_interval_s: float = Field(default=10.0, gt=0, description="how often the watchdog checks a managed server")
    preflight: bool = Field(default=True, description="backend openai: check URL, key and model at /v1/models before the run")
    retry_failed: int = Field(default=2, ge=0, description="passes, once the other problems are sent, over problems whose "
                              "request failed after its retries; what still fails is left for the next run")
    retry_pause_s: float = Field(default=10.0, ge=0, description="wait before each such pass (an outage may be passing)")
    breaker_consecutive: int = Field(default=50, ge=1, description="stop the run after this many failed problems in a row")
    breaker_window: int = Field(default=200, ge=10, description="problems the failure rate is taken over")
    breaker_failure_rate: float = Field(default=0.5, gt=0.0, le=1.0, description="stop when this share of the window failed")
    startup_timeout_s: float = Field(default=600.0, gt=0)
    extra_args: list[str] = Field(default_factory=list, description="passed to the server untouched")
    launcher: list[str] = Field(default_factory=list, description="a managed server is started through this command "
                                "(a wrapper such as taskset, a container runner or a profiler)")
    host: str = Field(default="127.0.0.1", description="where a managed server listens (a replica spanning nodes "
                      "uses its node's address)")
    nnodes: int = Field(default=1, ge=1, description="nodes one engine spans; set by scale: ray when a replica needs "
                        "more GPUs than a node has (scale.gpus_per_node)")
    node_rank: int = Field(default=0, ge=0, description="this process's node in an engine spanning nodes (0 serves)")
    dist_init_addr: str | None = Field(default=None, description="host:port of rank 0, where the nodes of one engine meet")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="merged into every request body")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM / sglang.Engine untouched")
    env: dict[str, str] = Field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The model's name in requests, rows and the card: an endpoint's model
        id as given; a model this factory serves is named by its folder."""
        if self.served_model_name:
            return self.served_model_name
        return self.model if self.backend == "openai" else Path(self.model).name

    @model_validator(mode="after")
    def _check_base_url(self) -> "EngineConfig":
        if self.backend == "openai" and not self.base_url:
            raise ValueError("engine.base_url is required when engine.backend is 'openai'")
        if self.backend == "openai" and self.chat_template and not self.tokenizer:
            raise ValueError("engine.chat_template with backend 'openai' needs engine.tokenizer: the endpoint applies "
                             "its own template, and the factory renders this one only to continue partial answers")
        if self.nnodes > 1:
            if self.backend not in MULTINODE_BACKENDS:
                raise ValueError(f"engine.backend {self.backend!r} cannot span nodes (engine.nnodes={self.nnodes}): "
                                 "use vllm-server or sglang-server")
            if self.node_rank >= self.nnodes or not self.dist_init_addr:
                raise ValueError("engine.nnodes > 1 needs engine.dist_init_addr (host:port of rank 0) and "
                                 "engine.node_rank below engine.nnodes")
        return self


class JudgeConfig(_Strict):
    """Stage 2: an LLM re-checks generations the rules rejected or could not decide."""

    enabled: bool = False
    engine: EngineConfig | None = Field(default=None, description="judge backend; unset: the generation engine")
    template: str = "judge"
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    response_chars: int = Field(default=2000, ge=100, description="tail of the generation the judge reads")
    max_concurrency: int = Field(default=16, ge=1)


class VerifyConfig(_Strict):
    enabled: bool = True
    preset: str = Field(default="default", description="a preset in verifiers/presets.yaml")
    rules: Path | None = Field(default=None, description="normalization rules; default verifiers/normalizers.yaml")
    workers: int = Field(default=2, ge=1)
    timeout_s: int = Field(default=5, ge=1, description="whole seconds per comparison")
    memory_mb: int = Field(default=2048, ge=256, description="address-space cap per worker")
    judge: JudgeConfig = JudgeConfig()


class PushConfig(_Strict):
    """Push to the Hub when a run finishes (the same as `factory push`)."""

    repo_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    private: bool = False
    revision: str | None = None


class OutputConfig(_Strict):
    dir: Path = Path("out/run")
    push: PushConfig | None = None
    license: str = "apache-2.0"
    shard_rows: int = Field(default=1000, ge=1, description="problems per Parquet shard")
    flush_interval_s: float = Field(default=60.0, gt=0, description="write a partial shard at least this often")
    messages_seed: int = 0


class ScaleConfig(_Strict):
    """Where the engines run: in this process, or as replicas on a Ray cluster."""

    mode: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="Ray address; unset: RAY_ADDRESS, else a local cluster")
    replicas: int | None = Field(default=None, ge=1, description="engine replicas; unset: one per GPU group, 1 on CPU")
    gpus_per_replica: int | None = Field(default=None, ge=0, description="unset: tensor x data parallel on GPU clusters, 0 on CPU")
    gpus_per_node: int | None = Field(default=None, ge=1, description="unset: the most GPUs any node of the cluster "
                                      "has; a replica needing more spans nodes (one engine process per node)")
    replica_cpus: float = Field(default=0.25, gt=0, description="CPUs reserved per replica actor (fractional is fine)")
    verifiers: int | None = Field(default=None, ge=1, description="Math-Verify actors; unset: one per replica")
    verifier_cpus: float = Field(default=0.1, gt=0)
    chunk_size: int = Field(default=256, ge=1, description="problems per chunk; each chunk becomes one shard")
    flush_problems: int = Field(default=16, ge=1, description="a replica writes a chunk's finished problems as a "
                                "part shard every this many, so a dead replica loses at most these")
    flush_interval_s: float = Field(default=120.0, gt=0, description="...or this often, whichever comes first")
    inflight_chunks: int = Field(default=2, ge=1, description="chunks queued per replica (back-pressure)")
    max_replica_restarts: int = Field(default=8, ge=0, description="replacements of dead replicas, all replicas together")
    max_chunk_attempts: int = Field(default=3, ge=1, description="a chunk that fails this often stops the run")
    start_timeout_s: float = Field(default=1800.0, gt=0, description="time for a replica to be placed and ready")


class MetricsConfig(_Strict):
    """A Prometheus endpoint for the run (dashboards/ has a Grafana board for it)."""

    port: int | None = Field(default=None, ge=0, le=65535, description="serve /metrics on this port; unset: off")
    host: str = Field(default="127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape")


class JobConfig(_Strict):
    name: str = "job"
    source: SourceConfig
    prompt: PromptConfig = PromptConfig()
    sampling: SamplingConfig = SamplingConfig()
    engine: EngineConfig = EngineConfig()
    verify: VerifyConfig = VerifyConfig()
    output: OutputConfig = OutputConfig()
    scale: ScaleConfig = ScaleConfig()
    metrics: MetricsConfig = MetricsConfig()


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings; values are YAML scalars (`n=4` is an int)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. sampling.n=4")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def _format_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        msg = f"{msg} (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" (+{more} more error{'s' if more > 1 else ''})" if more > 0 else ""
    return f"{path}: {loc}: {msg}{tail}"


def _find_job(path: Path, near: Path | None = None) -> Path:
    """A job file by path (relative to `near`, then cwd), else a shipped one in jobs/."""
    for candidate in ([near / path] if near is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_file():
            return candidate
    found = assets.find("jobs", str(path))
    if found is None or not found.is_file():
        raise ConfigError(f"job file not found: {path}")
    return found


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: sections merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# settings that name files, relative to the job file that sets them
_FILE_KEYS = (("source", "path"), ("prompt", "template"), ("verify", "rules"), ("verify", "judge", "template"),
              ("engine", "chat_template"))


def _anchor_files(data: dict[str, Any], folder: Path) -> None:
    """Make a base job's relative file settings absolute, so they keep pointing
    at its own folder once an overlay in another folder is merged on top."""
    def anchored(value: Any) -> Any:
        if not isinstance(value, str) or Path(value).is_absolute():
            return value
        candidate = folder / value
        return str(candidate) if candidate.exists() or glob.glob(str(candidate)) else value

    for keys in _FILE_KEYS:
        node = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = anchored(node[keys[-1]])
    deco = (data.get("source") or {}).get("decontaminate") if isinstance(data.get("source"), dict) else None
    if isinstance(deco, dict) and isinstance(deco.get("benchmarks"), list):
        deco["benchmarks"] = [anchored(b) for b in deco["benchmarks"]]


def read_layers(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A job file with its `base:` chain merged underneath it (an overlay names
    the job it varies, e.g. `base: ../openr1-math.yaml`, and overrides keys)."""
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: expected the path of a job file, got {base!r}")
    base_path = _find_job(Path(base), path.parent).resolve()
    if base_path in chain or base_path == path.resolve():
        raise ConfigError(f"{path}: base: {base} includes itself ({' -> '.join(p.name for p in (*chain, path))})")
    under = read_layers(base_path, (*chain, path.resolve()))
    _anchor_files(under, base_path.parent)
    return merge(under, data)


def load_job(path: str | Path, overrides: list[str] | None = None, output_dir: str | Path | None = None) -> JobConfig:
    """Read, override and validate a job file; raise ConfigError on any problem."""
    path = _find_job(Path(path))
    data = read_layers(path)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    if output_dir is not None:
        data.setdefault("output", {})
        data["output"]["dir"] = str(output_dir)
    try:
        job = JobConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from None
    return resolve_paths(job, path.parent)


def resolve_source_path(src: Path, base: Path) -> Path:
    """A file, folder or glob, relative to `base` (the job file) or cwd."""
    given = src
    if not src.is_absolute():
        candidate = base / src
        src = candidate if (candidate.exists() or glob.glob(str(candidate))) else Path.cwd() / src
    if not src.exists() and not glob.glob(str(src)):
        raise ConfigError(f"source.path: file not found: {given}")
    return src if glob.has_magic(str(src)) else src.resolve()


def load_source(source: str, overrides: list[str] | None = None) -> SourceConfig:
    """`factory prepare SOURCE`: a local path or glob, else a Hub dataset name."""
    data: dict[str, Any] = {}
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key.removeprefix("source."), value)
    local = Path(source).exists() or glob.has_magic(source)
    data["path" if local else "dataset"] = source
    try:
        cfg = SourceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(Path("--set"), err).replace("--set: ", "source.", 1)) from None
    if cfg.path is not None:
        cfg.path = resolve_source_path(cfg.path, Path.cwd())
    return cfg


def resolve_paths(job: JobConfig, base: Path) -> JobConfig:
    """Make every path absolute and check that the files exist; the resolved
    path is what is stored, so no later stage has to know the job's folder.
    What only a stage knows (benchmark names, rule presets) it checks itself."""
    if job.source.path is not None:
        job.source.path = resolve_source_path(job.source.path, base)
    prompt = assets.prompt_path(job.prompt.template, base)
    if prompt is None:
        raise ConfigError(f"prompt.template: template not found: {job.prompt.template}")
    job.prompt.template = str(prompt)
    if job.engine.chat_template is not None:
        found = assets.template_path(job.engine.chat_template, "prompts/chat", base)
        if found is None:
            raise ConfigError(f"engine.chat_template: template not found: {job.engine.chat_template}")
        job.engine.chat_template = str(found)
    judge = job.verify.judge
    if judge.enabled:
        found = assets.template_path(judge.template, "verifiers", base)
        if found is None:
            raise ConfigError(f"verify.judge.template: template not found: {judge.template}")
        judge.template = str(found)
    if job.scale.mode == "ray" and judge.enabled and judge.engine is not None and judge.engine.backend != "openai":
        raise ConfigError("verify.judge.engine.backend: with scale.mode 'ray' the judge must be an endpoint "
                          "(backend: openai) or unset (each replica judges with its own engine)")
    rules = job.verify.rules
    if rules is not None:
        rules = rules if rules.is_absolute() or not (base / rules).exists() else base / rules
        if not rules.is_file():
            raise ConfigError(f"verify.rules: file not found: {job.verify.rules}")
        job.verify.rules = rules.resolve()
    if not job.output.dir.is_absolute():
        # -o is relative to where the user stands; a job file's own output
        # folder too, so runs land beside the user, not inside the package.
        job.output.dir = (Path.cwd() / job.output.dir).resolve()
    return job
