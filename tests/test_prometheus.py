"""A real Prometheus (Debian's package) scrapes a short real run, and every
query of every panel in dashboards/*.json returns data from it. The engine
is the stand-in managed server (its vLLM-like /metrics re-exported by the
factory per replica), the generation engine doubles as the judge."""

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import FACTORY, ROOT, wait_for
from factory.engines.managed import free_port
from test_run_fake import fake_job

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed (the Makefile's test setup installs it)")


def query(base: str, expr: str, at: float | None = None) -> list:
    """An instant query, at `at` (a run's series go stale once its endpoint is gone)."""
    params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
    url = f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path):
    metrics_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: reasoning-factory
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{prom_port}"
    out = tmp_path / "out"
    job = fake_job(tmp_path, "http://unused", out, name="dash",
                   engine={"backend": "vllm-server", "model": "smollm2-135m", "max_concurrency": 2,
                           "launcher": [sys.executable, str(ROOT / "tests" / "doubles" / "standin_engine.py")],
                           "env": {"STANDIN_RECORD_DIR": str(tmp_path / "records"), "STANDIN_LATENCY_S": "0.25"}},
                   verify={"judge": {"enabled": True, "max_tokens": 16}}, metrics={"port": metrics_port},
                   sampling={"n": 2, "max_tokens": 64, "temperature": 0.0})
    try:
        wait_for(lambda: _up(base), 60, "Prometheus up")
        run = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        # wait until Prometheus holds the run's series and they have moved; query as of then
        seen = 'count_over_time(factory_problems_total{factory_job="dash",state="done"}[1m]) >= 5'
        wait_for(lambda: query(base, 'factory_problems_total{factory_job="dash",state="done"} > 10') and query(base, seen),
                 180, "the run seen by Prometheus over several scrapes", interval=1.0)
        at = time.time()
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        dashboard = json.loads((ROOT / "dashboards" / "factory.json").read_text())
        jobs = query(base, 'count by (factory_job) (factory_problems_total)', at)
        assert [r["metric"]["factory_job"] for r in jobs] == ["dash"]  # the job variable's values: the factory job
        assert not query(base, '{exported_job!=""}', at)  # no clash with Prometheus's own `job` label
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$job", "dash")
                if not query(base, expr, at):
                    empty.append((panel["title"], expr))
        assert not empty, empty
        replicas = {r["metric"]["replica"] for r in query(base, 'vllm:num_requests_running{factory_job="dash"}', at)}
        assert replicas == {"0"}
    finally:
        prom.terminate()
        prom.wait(timeout=30)


def _up(base: str) -> bool:
    try:
        return urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200
    except OSError:
        return False
