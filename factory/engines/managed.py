"""An inference server the factory starts, watches, restarts and stops.

Subclasses say how to launch it (vLLM, SGLang). The server runs in its own session (process group) so that stopping it takes
its engine-core children too. It ignores SIGTERM while loading, so stop()
escalates to SIGKILL after a grace period. Its process group id is written
to a pid file in the run folder: if the factory itself is killed with -9,
the next run finds and kills the orphan before starting a new server. On
Linux the server also gets PDEATHSIG, so it dies with the factory.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from factory.config import EngineConfig, SamplingConfig
from factory.engines.base import EngineDeadError, EngineStartError
from factory.engines.openai_http import CHAT, OpenAIEngine, RetryableError
from factory.models import ensure_model

log = logging.getLogger(__name__)

__all__ = ["EngineDeadError", "EngineStartError", "ManagedServerEngine", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_group(pgid: int, grace_s: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM a process group, then SIGKILL what is left after `grace_s`.
    `proc`, the group's leader if it is our child, is reaped while waiting:
    unreaped, its zombie would keep the group looking alive for the whole grace."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


def reap_stale(pid_file: Path) -> bool:
    """Kill a server left behind by a run that was killed; True if one was found."""
    try:
        pgid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    pid_file.unlink(missing_ok=True)
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    kill_group(pgid, grace_s=2.0)
    return True


class ManagedServerEngine(OpenAIEngine):
    """A server subprocess + the HTTP client; restarted when it dies mid-run.

    A request that fails because the server died triggers one restart (under
    a lock, so concurrent failures restart it once) and is then retried by
    the client's backoff loop against the new server: what was in flight is
    re-sent, nothing is lost. A watchdog task restarts a server that is alive
    but has failed its health check for `engine.hang_timeout_s`, the same way.
    """

    server_name = "server"
    health_path = "/health"

    def __init__(self, cfg: EngineConfig, sampling: SamplingConfig, run_dir: Path | None = None):
        super().__init__(cfg, sampling, base_url=f"http://{cfg.host}:0")
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log_fh = None
        self._model_path: str | None = None
        self._restart_lock: asyncio.Lock | None = None
        self._ready: asyncio.Event | None = None  # cleared while (re)starting
        self.restarts = 0
        self._watchdog: asyncio.Task | None = None
        self._dead: EngineDeadError | None = None  # the watchdog ran out of restarts

    @property
    def metrics_url(self) -> str | None:
        return f"{self.base_url}/metrics" if self.alive() else None

    @property
    def pid_file(self) -> Path | None:
        return self.run_dir / "engine.pid" if self.run_dir else None

    def command(self, model_path: str, port: int) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update(self.default_env())
        env.update(self.cfg.env)
        return env

    def default_env(self) -> dict[str, str]:
        return {}

    def template_args(self) -> list[str]:
        return ["--chat-template", self.cfg.chat_template] if self.cfg.chat_template else []

    def node_args(self) -> list[str]:  # pragma: no cover - abstract
        """The flags that make this process rank `node_rank` of an engine spanning `nnodes` nodes."""
        raise NotImplementedError

    def full_command(self, model_path: str, port: int) -> list[str]:
        """What is started: the launcher, the server and, across nodes, its rank."""
        cmd = self.command(model_path, port)
        if self.cfg.nnodes > 1:
            cmd += self.node_args()
        return [*self.cfg.launcher, *cmd]

    async def start(self) -> None:
        if self.pid_file and reap_stale(self.pid_file):
            log.info("stopped an engine server left behind by an interrupted run")
        self._model_path = await asyncio.to_thread(ensure_model, self.cfg.model)
        # the template the server applies, applied here too to continue partial answers
        try:
            await self.load_chat_format(self.cfg.tokenizer or self._model_path)
        except (OSError, ValueError) as exc:
            log.warning(f"no tokenizer at {self.cfg.tokenizer or self._model_path} ({type(exc).__name__}): partial "
                        "answers are continued through the chat API, which R1's template rewrites (engine.tokenizer)")
        self._restart_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        await self._launch()
        self._ready.set()
        await super().start()
        self._watchdog = asyncio.create_task(self._watch())

    async def _healthy(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.base_url}{self.health_path}") as r:
                return r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            return False

    async def _watch(self) -> None:
        """Restart a server that is alive but hung, like a dead one."""
        failing_since: float | None = None
        timeout = aiohttp.ClientTimeout(total=min(5.0, self.cfg.health_interval_s))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.sleep(self.cfg.health_interval_s)
                if not self._ready.is_set() or await self._healthy(session):
                    failing_since = None
                    continue
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since < self.cfg.hang_timeout_s:
                    continue
                log.info(f"{self.server_name} failed its health check for {time.monotonic() - failing_since:.0f} s "
                         "(engine.hang_timeout_s); restarting it")
                failing_since = None
                await asyncio.to_thread(self._kill, 0.0)  # hung: no grace; its in-flight requests are re-sent
                try:
                    await self._restart()
                except EngineDeadError as exc:
                    self._dead = exc
                    return

    async def _launch(self) -> None:
        self.port = free_port(self.cfg.host)
        self.base_url = f"http://{self.cfg.host}:{self.port}"
        log_path = (self.run_dir / "engine.log") if self.run_dir else Path(os.devnull)
        if self.run_dir:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(log_path, "ab")
        self.proc = self._spawn(self._model_path, self.port, self._log_fh)
        if self.pid_file:
            self.pid_file.write_text(f"{self.proc.pid}\n")
        await self._wait_healthy(log_path)

    def _spawn(self, model_path: str, port: int, log_fh) -> subprocess.Popen:
        return subprocess.Popen(
            self.full_command(model_path, port),
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env(),
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def launch_node(self, log_path: Path) -> subprocess.Popen:
        """Start this engine as a rank above 0 of an engine spanning nodes:
        its share of the model, no API; the caller watches and stops it."""
        assert self.cfg.node_rank > 0, "rank 0 is started by start() and serves"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as fh:
            return self._spawn(ensure_model(self.cfg.model), free_port(self.cfg.host), fh)

    async def _post_once(self, payload: dict, path: str = CHAT):
        if self._dead is not None:
            raise self._dead
        if self._ready is not None:
            await self._ready.wait()  # during a restart, requests wait instead of burning retries
        try:
            return await super()._post_once(payload, path)
        except RetryableError:
            if self.proc is not None and not self.alive():
                await self._restart()
            raise

    async def _restart(self) -> None:
        assert self._restart_lock is not None
        async with self._restart_lock:
            if self.alive():  # another request restarted it already
                return
            if self.restarts >= self.cfg.max_restarts:
                raise EngineDeadError(f"{self.server_name} died {self.restarts + 1} times "
                                      f"(engine.max_restarts={self.cfg.max_restarts}); see its log in the run folder")
            self.restarts += 1
            code = self.proc.returncode if self.proc else None
            log.info(f"{self.server_name} exited (code {code}); restarting it ({self.restarts}/{self.cfg.max_restarts})")
            self._ready.clear()
            try:
                self._kill()
                await self._launch()
            finally:
                self._ready.set()

    async def _wait_healthy(self, log_path: Path) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        url = f"{self.base_url}{self.health_path}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise EngineStartError(
                        f"{self.server_name} exited with code {self.proc.returncode} while starting; see {log_path}"
                    )
                try:
                    async with s.get(url) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                    pass
                await asyncio.sleep(0.5)
        raise EngineStartError(
            f"{self.server_name} not healthy after {self.cfg.startup_timeout_s:.0f} s (engine.startup_timeout_s); see {log_path}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill(self, grace_s: float = 10.0) -> None:
        # taken first: the watchdog (in a thread) and a failing request may both get here
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_group(proc.pid, grace_s, proc)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        fh, self._log_fh = self._log_fh, None
        if fh is not None:
            fh.close()

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        await super().stop()
        await asyncio.to_thread(self._kill)
        if self.pid_file:
            self.pid_file.unlink(missing_ok=True)
