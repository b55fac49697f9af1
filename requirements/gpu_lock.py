"""The GPU install, pinned: resolve `reasoning-factory[vllm,ray]` or
`[sglang,ray]` for Linux x86_64, CPython 3.11 and PyPI's CUDA wheels, and
write every version pip picks to `requirements/gpu-<engine>.lock`.

Resolution runs `pip install --dry-run` with the target platform's tags, so
it works from any machine (only wheel metadata is fetched, no CUDA build is
downloaded). `make lock-gpu` writes the locks; `tests/test_gpu_install.py`
resolves again against them and checks that the set is whole and unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("vllm", "sglang")
PYTHON = "3.11"
# manylinux tags a current x86_64 GPU node accepts (glibc 2.35 on Ubuntu 22.04; newer is fine)
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in range(35, 4, -1)] + ["manylinux2014_x86_64", "linux_x86_64", "any"]
SKIP = {"reasoning-factory"}


def requirements(engine: str) -> list[str]:
    """The factory's own dependencies plus the engine's extra and Ray's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras[engine], *extras["ray"]]


def lock_path(engine: str) -> Path:
    return ROOT / "requirements" / f"gpu-{engine}.lock"


def resolve(engine: str, constraints: Path | None = None, timeout: float = 1200) -> dict[str, str]:
    """{name: version} pip installs for `engine` on the GPU target."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--target", str(Path(tmp) / "t"), "--python-version", PYTHON,
               "--implementation", "cp", "--only-binary=:all:"]
        for tag in PLATFORMS:
            cmd += ["--platform", tag]
        if constraints is not None:
            cmd += ["-c", str(constraints)]
        # this machine's own pip settings (a local CPU torch, version caps) say nothing about a GPU node
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
        proc = subprocess.run([*cmd, *requirements(engine)], capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not resolve the {engine} GPU set:\n{proc.stderr[-3000:]}")
        got = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in got
            if i["metadata"]["name"].lower() not in SKIP}


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def write_lock(engine: str, pins: dict[str, str]) -> Path:
    path = lock_path(engine)
    head = [f"# The GPU install for engine '{engine}', resolved and pinned together: Linux x86_64,",
            f"# CPython {PYTHON}, PyPI's CUDA wheels. Regenerate with `make lock-gpu`; install with",
            f"#   pip install -c requirements/gpu-{engine}.lock '.[{engine},ray]'"]
    path.write_text("\n".join([*head, *(f"{n}=={v}" for n, v in sorted(pins.items()))]) + "\n", encoding="utf-8")
    return path


def main() -> None:
    for engine in sys.argv[1:] or ENGINES:
        print(f"{write_lock(engine, resolve(engine))}")


if __name__ == "__main__":
    main()
