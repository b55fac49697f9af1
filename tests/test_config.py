from pathlib import Path

import pytest

import yaml

from conftest import ROOT, SAMPLE, run_factory, write_job
from factory.config import ConfigError, load_job, parse_overrides


def test_valid_job_resolves_paths(tmp_path):
    job = load_job(write_job(tmp_path / "j.yaml", SAMPLE, tmp_path / "out"))
    assert job.source.path == SAMPLE.resolve()
    assert job.output.dir == (tmp_path / "out").resolve()
    assert job.sampling.n == 2 and job.engine.backend == "vllm-server"


def test_quickstart_job_is_valid():
    job = load_job(Path(__file__).parent.parent / "jobs" / "quickstart.yaml")
    assert job.source.path.name == "numina-sample.jsonl" and job.sampling.n == 2


def test_overrides_are_typed_and_output_flag_wins(tmp_path):
    job = load_job(write_job(tmp_path / "j.yaml", SAMPLE, tmp_path / "out"),
                   ["sampling.n=4", "sampling.temperature=0.0", "engine.max_concurrency=3"], tmp_path / "o2")
    assert (job.sampling.n, job.sampling.temperature, job.engine.max_concurrency) == (4, 0.0, 3)
    assert job.output.dir == (tmp_path / "o2").resolve()
    assert parse_overrides(["a.b=x=y"]) == [("a.b", "x=y")]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["sampling.n=abc"], "sampling.n: Input should be a valid integer"),
        (["engine.bogus=1"], "engine.bogus: unknown key"),
        (["sampling.n=0"], "sampling.n: Input should be greater than or equal to 1"),
        (["engine.backend=nope"], "engine.backend: Input should be"),
        (["source.path=/no/such/file.jsonl"], "source.path: file not found: /no/such/file.jsonl"),
        (["prompt.template=missing-template"], "prompt.template: template not found: missing-template"),
        (["engine.backend=openai"], "engine.base_url is required"),
        (["engine.chat_template=no-such-template"], "engine.chat_template: template not found: no-such-template"),
        (["engine.backend=openai", "engine.base_url=http://x", "engine.chat_template=deepseek-r1"],
         "engine.chat_template with backend 'openai' needs engine.tokenizer"),
        (["nokey"], "expected key=value"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_job(write_job(tmp_path / "j.yaml", SAMPLE, tmp_path / "out"), overrides)
    assert expected in str(err.value)


def test_invalid_yaml_and_missing_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(bad)
    with pytest.raises(ConfigError, match="job file not found"):
        load_job(tmp_path / "none.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of settings"):
        load_job(top)


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    job = write_job(tmp_path / "j.yaml", SAMPLE, tmp_path / "out", engine={"max_concurency": 4})
    proc = run_factory("run", job)
    assert proc.returncode == 2
    assert "engine.max_concurency: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = run_factory("run", tmp_path / "missing.yaml")
    assert proc.returncode == 2 and "job file not found" in proc.stderr


JOBS = sorted(p for p in (Path(__file__).parent.parent / "jobs").rglob("*.yaml") if not p.name.startswith("sft-"))


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_shipped_job_file_is_valid(path):
    assert load_job(path).name


def test_overlay_job_varies_a_base_job(tmp_path):
    """`base:` names the job an overlay varies: sections merge key by key,
    and the base's relative files stay relative to the base's own folder."""
    base_dir, over_dir = tmp_path / "recipes", tmp_path / "mine"
    (base_dir / "data").mkdir(parents=True)
    over_dir.mkdir()
    (base_dir / "data" / "p.jsonl").write_text(SAMPLE.read_text())
    (base_dir / "my.jinja").write_text("{{ problem }}\n")
    (base_dir / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "recipe", "source": {"path": "data/p.jsonl", "include_sources": ["cn_k12", "olympiads"]},
        "prompt": {"template": "my.jinja"}, "sampling": {"n": 4, "max_tokens": 16384, "stop": ["x", "y"]},
        "engine": {"backend": "vllm-server", "model": "big", "max_concurrency": 256}}))
    (over_dir / "small.yaml").write_text(yaml.safe_dump({
        "base": "../recipes/recipe.yaml", "name": "small",
        "source": {"include_sources": ["cn_k12"]}, "sampling": {"max_tokens": 64, "stop": ["z"]},
        "engine": {"model": "smollm2-135m"}}))
    job = load_job(over_dir / "small.yaml")
    assert job.name == "small" and job.source.path == (base_dir / "data" / "p.jsonl").resolve()
    assert job.source.include_sources == ["cn_k12"] and job.sampling.stop == ["z"]  # lists are replaced
    assert (job.sampling.n, job.sampling.max_tokens) == (4, 64)
    assert (job.engine.model, job.engine.max_concurrency, job.engine.backend) == ("smollm2-135m", 256, "vllm-server")
    assert Path(job.prompt.template) == (base_dir / "my.jinja")
    # overrides still go on top of both layers
    assert load_job(over_dir / "small.yaml", ["sampling.n=1"]).sampling.n == 1


def test_overlay_errors_name_the_file(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_job(a)
    a.write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="job file not found: nowhere.yaml"):
        load_job(a)
    a.write_text("base: [1, 2]\n")
    with pytest.raises(ConfigError, match="base: expected the path of a job file"):
        load_job(a)


def test_rehearsal_overlay_is_the_recipe_with_small_models():
    recipe = load_job(ROOT / "jobs" / "openr1-math.yaml")
    small = load_job(ROOT / "jobs" / "openr1-math-rehearsal.yaml")
    assert small.source.dataset == recipe.source.dataset and small.sampling.n == recipe.sampling.n
    assert small.source.include_question_types == recipe.source.include_question_types
    assert small.scale.mode == recipe.scale.mode == "ray" and small.verify.judge.engine.backend == "openai"
    assert (recipe.engine.backend, small.engine.backend) == ("sglang-server", "vllm-server")
    assert small.engine.model == "smollm2-135m" and small.output.push is not None


def test_templates_relative_to_the_job_file_work_at_run_time(tmp_path, monkeypatch):
    """Templates named relative to the job file, loaded from another folder:
    the renderer, the judge and the card all find them."""
    from factory.prompts import PromptRenderer
    from factory.store.card import prompt_text
    from factory.verify.judge import LLMJudge

    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "mine.jinja").write_text("MY PROMPT {{ problem }}")
    (folder / "myjudge.jinja").write_text("MY JUDGE {{ gold }} {{ answer }}")
    job_file = write_job(folder / "j.yaml", SAMPLE, tmp_path / "out", prompt={"template": "mine.jinja"},
                         verify={"judge": {"enabled": True, "template": "myjudge.jinja"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    job = load_job(job_file)
    assert PromptRenderer(job.prompt).user_prompt({"problem": "1+1?"}) == "MY PROMPT 1+1?"
    judge = LLMJudge(job.verify.judge, engine=None)
    assert judge.prompt("p", "2", "3", "x").startswith("MY JUDGE 2 3")
    assert prompt_text(job.model_dump(mode="json")) == "MY PROMPT {{ problem }}"


R1_FP8_GB = 690  # DeepSeek-R1's weights in FP8 (671B parameters)


@pytest.mark.parametrize("job_file, gpu_gb, replicas, nodes_per_replica", [
    ("openr1-math.yaml", 80, 32, 2),  # 64 8xH100 nodes: TP16 over two nodes per replica
    ("openr1-math-h200.yaml", 141, 64, 1),  # 64 8xH200 nodes: one node per replica
])
def test_recipe_fits_its_hardware(job_file, gpu_gb, replicas, nodes_per_replica):
    from factory.scale import plan

    job = load_job(ROOT / "jobs" / job_file)
    p = plan(job, {"CPU": 64 * 128, "GPU": 64 * 8}, nodes=64, node_gpus=8)
    assert (p.replicas, p.nodes_per_replica) == (replicas, nodes_per_replica)
    assert p.gpus_per_replica * gpu_gb * job.engine.gpu_memory_utilization > R1_FP8_GB * 1.2  # weights + KV room
