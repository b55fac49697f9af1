"""Rehearse the OpenR1 recipe end to end on this machine: `make rehearsal`.

`jobs/openr1-math-rehearsal.yaml` is `jobs/openr1-math.yaml` with only the
model-size settings swapped, and every part around it is real:

1. a local Hub server holds a NuminaMath-1.5-layout set (tests/numina_like.py)
   under the real name `AI-MO/NuminaMath-1.5`; the job streams it by name;
2. a vLLM server in its own process is the judge, reached by URL;
3. run 1: `jobs/launch/slurm-ray.sbatch` on a two-node allocation (srun and
   scontrol shims, tests/cluster.py), the driver SIGKILLed mid-run;
4. run 2: `jobs/launch/ray-submit.sh` on a two-node Ray cluster finishes it
   (CPU vLLM replicas on both nodes) and pushes to the Hub;
5. run 3: the sbatch command again: nothing to generate, nothing new to push;
6. every config the pushed card declares loads with `datasets.load_dataset`;
7. `trl sft --config jobs/sft-qwen2.5-math.yaml` trains 2 steps of a tiny
   model on the pushed dataset through TRL's own command line.

It prints what it measured and writes it to WORKDIR/rehearsal.json.
What it cannot show: GPU kernels, tensor parallelism, the real R1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import numina_like  # noqa: E402

JOB = ROOT / "jobs" / "openr1-math-rehearsal.yaml"
SFT = ROOT / "jobs" / "sft-qwen2.5-math.yaml"
SOURCE_REPO = "AI-MO/NuminaMath-1.5"
TOKEN = "hf_rehearsal_local_token"
BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"[rehearsal {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not up at {url} after {timeout:.0f} s")


def sft_command(repo: str, config: str, output_dir: Path) -> list[str]:
    """`trl sft` with the shipped recipe, only the model and the size overridden."""
    from factory.models import ensure_model

    return [str(BIN / "trl"), "sft", "--config", str(SFT),
            # the model and the size
            "--model_name_or_path", ensure_model("smollm2-135m"), "--dataset_name", repo, "--dataset_config", config,
            "--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
            "--max_length", "512", "--output_dir", str(output_dir), "--logging_steps", "1", "--save_strategy", "no",
            # what a CPU cannot do (bf16 arithmetic, Liger's Triton kernels)
            "--use_cpu", "true", "--bf16", "false", "--use_liger_kernel", "false",
            "--model_init_kwargs", json.dumps({"dtype": "float32"})]


def sft_losses(log: str) -> list[float]:
    """The per-step losses TRL logs (`{'loss': ...}` lines)."""
    return [float(x) for x in re.findall(r"'loss': '?([0-9.]+(?:e-?\d+)?)", log)]


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def stored_uuids(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [u for f in sorted((out / "data").glob("train-*.parquet"))
            for u in pq.read_table(f, columns=["uuid"]).column("uuid").to_pylist()]


class Rehearsal:
    def __init__(self, workdir: Path):
        self.work = workdir
        self.out = workdir / "out"
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.shims = cluster.install_shims(workdir / "shims")
        self.figures: dict = {"runs": []}
        self.procs: list[subprocess.Popen] = []

    # -- the pieces ------------------------------------------------------------------------------
    def start_hub(self):
        from doubles.local_hub import LocalHub

        self.hub = LocalHub(self.work / "hub")
        url = self.hub.start()
        hf = dict(HF_ENDPOINT=url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1", HF_HOME=str(self.work / "hf"),
                  HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
                  HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
        # this process loads the pushed dataset back; the local Hub speaks the
        # classic LFS protocol, so Xet is off before huggingface_hub is imported
        os.environ.update(hf)
        # the pretend nodes' Ray temp dirs: short, as Ray's socket paths must stay under 107 bytes
        self.nodes_tmp = Path(tempfile.mkdtemp(prefix="fr-", dir="/tmp"))
        self.env = cluster.slurm_env(self.shims, self.nodes_tmp, 2, random.randint(21, 40) * 1000, **hf,
                                     PYTHONUNBUFFERED="1", FACTORY_PROGRESS="1")
        say(f"local Hub at {url}")

    def publish_source(self) -> None:
        from huggingface_hub import HfApi

        path = self.work / "source" / "train-00000-of-00001.parquet"
        n = numina_like.write_parquet(path)
        api = HfApi(token=TOKEN)
        api.create_repo(SOURCE_REPO, repo_type="dataset", exist_ok=True)
        api.upload_file(path_or_fileobj=str(path), path_in_repo="data/train-00000-of-00001.parquet",
                        repo_id=SOURCE_REPO, repo_type="dataset")
        self.figures["source_rows"] = n
        say(f"published {n} NuminaMath-1.5-layout rows as {SOURCE_REPO}")

    def start_judge(self) -> None:
        from factory.engines.platform import resolve_dtype
        from factory.models import ensure_model

        port = free_port()
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", ensure_model("smollm2-135m"),
               "--served-model-name", "judge", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", resolve_dtype("auto"), "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "16"]
        env = dict(self.env, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
        log = open(self.logs / "judge.log", "wb")
        self.judge = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(self.judge)
        self.judge_url = f"http://127.0.0.1:{port}/v1"
        self.judge_health = f"http://127.0.0.1:{port}/health"
        say(f"judge: a vLLM server (pid {self.judge.pid}) at {self.judge_url}")

    # -- the runs --------------------------------------------------------------------------------
    def _sbatch(self) -> list[str]:
        return ["bash", str(ROOT / "jobs" / "launch" / "slurm-ray.sbatch"), str(JOB)]

    def _sbatch_env(self) -> dict[str, str]:
        return dict(self.env, FACTORY_VENV=str(BIN.parent), GPUS_PER_NODE="0", RAY_PORT=str(free_port()),
                    JUDGE_URL=self.judge_url, FACTORY_OUTPUT=str(self.out))

    def run_sbatch_killed(self) -> None:
        """Run 1: the Slurm launcher; SIGKILL the driver once a chunk is stored."""
        t = time.monotonic()
        log_path = self.logs / "run1-sbatch.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(self._sbatch(), cwd=self.work, env=self._sbatch_env(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 900
            while not manifest(self.out) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError(f"run 1 ended before the kill (code {proc.returncode}); see {log_path}")
            driver = self._driver_pid(proc.pid)
            os.kill(driver, signal.SIGKILL)
            say(f"run 1: SIGKILLed the driver (pid {driver}) with {len(stored_uuids(self.out))} problem(s) stored")
            proc.wait(timeout=300)
        cluster.ray_stop(self.env)
        self._record("sbatch, driver SIGKILLed", log_path, t, killed=True)

    @staticmethod
    def _driver_pid(parent: int) -> int:
        found = subprocess.run(["pgrep", "-P", str(parent), "-f", "factory run"], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        if not pids:
            raise RuntimeError("run 1: the driver (factory run) was not found under the sbatch script")
        return pids[0]

    def run_ray_submit(self) -> None:
        """Run 2: a two-node Ray cluster with its dashboard; `ray job submit` finishes the job."""
        t = time.monotonic()
        dash, gcs = free_port(), free_port()
        head = cluster.srun(self.env, "node0", str(BIN / "ray"), "start", "--head", f"--port={gcs}",
                            "--include-dashboard=true", f"--dashboard-port={dash}", "--disable-usage-stats")
        if head.returncode:
            raise RuntimeError(f"ray head did not start: {head.stderr[-2000:]}")
        worker = cluster.srun(self.env, "node1", str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}",
                              "--disable-usage-stats")
        if worker.returncode:
            raise RuntimeError(f"ray worker node did not start: {worker.stderr[-2000:]}")
        log_path = self.logs / "run2-ray-submit.log"
        try:
            wait_http(f"http://127.0.0.1:{dash}/api/version", 120, what="Ray dashboard")
            with open(log_path, "w") as log:
                proc = subprocess.run([str(ROOT / "jobs" / "launch" / "ray-submit.sh"), str(JOB), "-o", str(self.out),
                                       "--set", f"verify.judge.engine.base_url={self.judge_url}"],
                                      cwd=ROOT, env=dict(self.env, RAY_ADDRESS=f"http://127.0.0.1:{dash}"),
                                      stdout=log, stderr=subprocess.STDOUT, timeout=1500)
        finally:
            cluster.ray_stop(self.env)
        if proc.returncode:
            raise RuntimeError(f"run 2 (ray-submit.sh) failed with code {proc.returncode}; see {log_path}")
        self._record("ray job submit", log_path, t)

    def run_sbatch_again(self) -> None:
        """Run 3: the same sbatch command: everything is stored, nothing is generated."""
        t = time.monotonic()
        log_path = self.logs / "run3-sbatch.log"
        with open(log_path, "w") as log:
            proc = subprocess.run(self._sbatch(), cwd=self.work, env=self._sbatch_env(), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=900)
        cluster.ray_stop(self.env)
        if proc.returncode:
            raise RuntimeError(f"run 3 failed with code {proc.returncode}; see {log_path}")
        self._record("sbatch again", log_path, t)

    def _record(self, what: str, log_path: Path, t0: float, killed: bool = False) -> None:
        text = log_path.read_text(errors="replace")
        entries = manifest(self.out)
        new, self._seen = entries[getattr(self, "_seen", 0):], len(entries)
        gen = re.search(r"problems generated \(this run\)\s*│\s*(\d+)", text)
        pushed = re.search(r"pushed to \S+: (\d+) file\(s\) uploaded", text)
        run = {"launcher": what, "seconds": round(time.monotonic() - t0, 1), "killed": killed,
               "generated": int(gen.group(1)) if gen else None, "stored_after": len(set(stored_uuids(self.out))),
               "nothing_to_generate": "nothing to generate" in text,
               "files_uploaded": int(pushed.group(1)) if pushed else None,
               "ray_nodes": [int(n) for n in re.findall(r"joined Ray at \S+: (\d+) node", text)],
               # the Ray nodes whose replicas wrote this run's shards (node ids are new in each cluster)
               "nodes_writing": len({e.get("node") for e in new if e.get("node") and not e.get("adopted")})}
        self.figures["runs"].append(run)
        say(f"{what}: {run}")

    # -- what came out ---------------------------------------------------------------------------
    def check_pushed(self) -> None:
        import datasets

        repo = "rehearsal/openr1-math-cpu"
        configs = datasets.get_dataset_config_names(repo)
        loaded = {c: datasets.load_dataset(repo, c, split="train") for c in configs}
        rows = loaded["all"]
        judged = [v for row in rows["judge_verdicts"] if row for v in row if v is not None]
        replicas = {(e.get("replica"), e.get("node")) for e in manifest(self.out) if not e.get("adopted")}
        self.figures.update(
            repo=repo, configs={c: len(d) for c, d in loaded.items()}, problems=len(rows),
            unique_problems=len(set(rows["uuid"])), generations=sum(len(g) for g in rows["generations"]),
            verified=sum(rows["correctness_count"]), judge_calls=len(judged),
            judge_recovered=sum(v == "correct" for v in judged), replicas=sorted(map(list, replicas)),
            nodes=len({n for _, n in replicas if n}))
        say(f"pushed: {self.figures['configs']}; {self.figures['generations']} generations, "
            f"{self.figures['verified']} verified, {len(judged)} judge calls")

    def train(self) -> None:
        """`trl sft` on the pushed dataset with only the model and the size overridden."""
        # `default` holds the verified traces; a set where nothing verified trains on `all`
        config = "default" if self.figures["configs"].get("default") else "all"
        t = time.monotonic()
        proc = subprocess.run(sft_command(self.figures["repo"], config, self.work / "sft"), env=self.env,
                              capture_output=True, text=True, timeout=900, cwd=self.work)
        (self.logs / "trl-sft.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            raise RuntimeError(f"trl sft failed ({proc.returncode}): {proc.stderr[-3000:]}")
        losses = sft_losses(proc.stdout + proc.stderr)
        self.figures["sft"] = {"config": config, "losses": losses, "seconds": round(time.monotonic() - t, 1)}
        say(f"trl sft on '{config}': losses {losses}")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        cluster.ray_stop(getattr(self, "env", dict(os.environ)))
        if getattr(self, "hub", None) is not None:
            self.hub.stop()
        if getattr(self, "nodes_tmp", None) is not None:
            shutil.rmtree(self.nodes_tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    args = ap.parse_args(argv)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="factory-rehearsal-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    r = Rehearsal(work)
    t0 = time.monotonic()
    try:
        r.start_hub()
        r.start_judge()
        r.publish_source()
        wait_http(r.judge_health, 600, r.judge, "the judge server")
        r.run_sbatch_killed()
        r.run_ray_submit()
        r.run_sbatch_again()
        r.check_pushed()
        r.train()
    finally:
        r.close()
    r.figures["wall_s"] = round(time.monotonic() - t0, 1)
    (work / "rehearsal.json").write_text(json.dumps(r.figures, indent=2))
    say(f"done in {r.figures['wall_s']} s; figures in {work / 'rehearsal.json'}")
    print(json.dumps(r.figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
