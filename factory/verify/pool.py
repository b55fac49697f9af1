"""Stage 1 of the cascade: Math-Verify in worker processes that can be killed.

Math-Verify's own timeout is SIGALRM-based (main thread only, whole seconds,
cancels the caller's alarms) and some inputs (`10^{10^{10}}`) hang while
holding the GIL. So every comparison runs in a pebble process pool with the
library's timeouts off: the pool's timeout kills and replaces a stuck worker,
and an address-space limit stops a runaway allocation. A row always gets a
verdict: `ok`, `no_answer`, `timeout` or `error`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from pebble import ProcessPool
from pebble.common import ProcessExpired

from factory.verify.normalize import Options, compare, grade, load_preset, load_rules, options_dict, raw_compare

STATUS_OK = "ok"
STATUS_NO_ANSWER = "no_answer"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class Verdict:
    status: str
    correct: bool
    detail: str | None = None
    extracted: str | None = None  # the answer that decided it (ours, or what Math-Verify read)


_WORKER: dict = {}


def _init_worker(memory_mb: int, options: dict, rules_path: str | None) -> None:
    import resource
    import sys

    sys.set_int_max_str_digits(0)
    limit = memory_mb * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):  # pragma: no cover - platform without RLIMIT_AS
        pass
    # With timeouts off, math_verify warns on every call.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    import math_verify  # noqa: F401  (import once per worker, not per row)

    _WORKER["options"] = Options(**options)
    _WORKER["rules"] = load_rules(rules_path)


def check(gold: str, answer: str, problem: str | None = None) -> bool:
    """Runs in a worker: the preset's comparison of gold and an extracted answer."""
    return compare(gold, answer, problem, _WORKER["options"], _WORKER["rules"])


def check_generation(gold: str, generation: str, finish_reason: str | None, problem: str | None = None):
    """Runs in a worker: extraction and comparison of one whole generation -> (correct, extracted)."""
    return grade(gold, generation, finish_reason, problem, _WORKER["options"], _WORKER["rules"])


def check_raw(gold: str, generation: str) -> bool:
    """Runs in a worker: plain Math-Verify on the whole generation."""
    return raw_compare(gold, generation)


class RuleVerifier:
    """A bounded pool of killable Math-Verify workers."""

    def __init__(self, workers: int = 2, timeout_s: int = 5, memory_mb: int = 2048,
                 preset: str = "default", rules_path: str | None = None):
        self.timeout_s = int(timeout_s)
        self.workers = workers
        self.memory_mb = memory_mb
        self.preset = preset
        self.options = load_preset(preset)
        load_rules(rules_path)  # fail here, in the driver, on a broken rules file
        self._initargs = (memory_mb, options_dict(self.options), str(rules_path) if rules_path else None)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # spawn, not fork: a forked worker inherits the driver's address space
        # (torch, threads, sockets) which the RLIMIT_AS cap would then choke.
        return ProcessPool(
            max_workers=self.workers, initializer=_init_worker, initargs=self._initargs,
            context=multiprocessing.get_context("spawn"),
        )

    def submit(self, fn, *args):
        try:
            return self._pool.schedule(fn, args=args, timeout=self.timeout_s)
        except RuntimeError:  # the pool broke (workers could not start): start afresh once
            self._pool.stop()
            self._pool = self._new_pool()
            return self._pool.schedule(fn, args=args, timeout=self.timeout_s)

    @staticmethod
    def _result(future) -> Verdict:
        try:
            value = future.result()
            if isinstance(value, tuple):  # check_generation: (correct, extracted)
                correct, extracted = value
                return Verdict(STATUS_OK if extracted is not None else STATUS_NO_ANSWER, bool(correct), None, extracted)
            return Verdict(STATUS_OK, bool(value))
        except FutureTimeout:
            return Verdict(STATUS_TIMEOUT, False, "verification timed out")
        except ProcessExpired as exc:
            return Verdict(STATUS_ERROR, False, f"worker died: {exc}")
        except BaseException as exc:  # noqa: BLE001 - any failure is a recorded verdict
            return Verdict(STATUS_ERROR, False, f"{type(exc).__name__}: {exc}"[:500])

    async def aschedule(self, fn, *args) -> Verdict:
        future = self.submit(fn, *args)
        try:
            await asyncio.wrap_future(future)
        except BaseException:  # noqa: BLE001 - inspected by _result
            pass
        return self._result(future)

    async def averify(self, gold: str, answer: str | None, problem: str | None = None) -> Verdict:
        if answer is None:
            return Verdict(STATUS_NO_ANSWER, False)
        return await self.aschedule(check, gold, answer, problem)

    async def agrade(self, gold: str, generation: str, finish_reason: str | None, problem: str | None = None) -> Verdict:
        return await self.aschedule(check_generation, gold, generation, finish_reason, problem)

    def verify(self, gold: str, answer: str | None, problem: str | None = None) -> Verdict:
        if answer is None:
            return Verdict(STATUS_NO_ANSWER, False)
        return self.wait(self.submit(check, gold, answer, problem))

    def wait(self, future) -> Verdict:
        try:
            future.result()
        except BaseException:  # noqa: BLE001 - inspected by _result
            pass
        return self._result(future)

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)

    def __enter__(self) -> "RuleVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
