"""OpenAI-compatible chat client on raw aiohttp.

The `openai` SDK costs ~0.7 ms a request in Python (600-1,400 generations/s
on this machine); one aiohttp session with a connection pool sized to the
concurrency does 8,000+ per second, so the hot path talks HTTP itself.
Transient failures (429, 5xx, dropped connections, timeouts, garbled JSON)
are retried with exponential backoff and jitter, honouring Retry-After;
a request the server rejects as bad (4xx) is recorded on the row, not retried.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from factory.config import ConfigError, EngineConfig, SamplingConfig
from factory.engines.base import Completion, Engine, GenerationResult
from factory.engines.chat_format import ChatFormat
from factory.think import with_thinking

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# the endpoint, not the request, is wrong (a key revoked, a model unloaded): the problem is not done
SETTING_STATUS = {401, 403, 404}


class RetryableError(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


class _Wait(wait_exponential_jitter):
    """Backoff with jitter, but never shorter than the server's Retry-After."""

    def __call__(self, retry_state) -> float:
        base = super().__call__(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        return max(base, after) if after else base


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After")
    try:
        return min(float(value), 120.0) if value else None
    except ValueError:
        return None


def _choice_text(choice: dict) -> str:
    """A completions choice's text, or a chat choice's message as R1 writes
    it, even when a server's reasoning parser split the thinking off."""
    if "message" not in choice:
        return choice["text"]
    message = choice["message"]
    return with_thinking(message.get("reasoning_content") or message.get("reasoning"), message.get("content") or "",
                         closed=choice.get("finish_reason") != "length")


def _stop_reason(choice: dict) -> str | None:
    """The matched stop string: vLLM says `stop_reason`, SGLang `matched_stop`."""
    value = choice.get("stop_reason", choice.get("matched_stop"))
    return value if isinstance(value, str) else None


def auth_headers(cfg: EngineConfig) -> dict[str, str]:
    """The bearer key from `engine.api_key_env`, if set; it goes nowhere else."""
    key = os.environ.get(cfg.api_key_env)
    return {"Authorization": f"Bearer {key}"} if key else {}


async def preflight(cfg: EngineConfig, setting: str = "engine") -> str | None:
    """Ask the endpoint for its models before anything is prepared: a wrong
    URL, key or model name is one line naming the setting (ConfigError), not
    an error row per problem. Returns a note when the check could not be made."""
    url = f"{(cfg.base_url or '').rstrip('/')}/v1/models"
    headers = auth_headers(cfg)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(url, headers=headers) as resp:
                status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise ConfigError(f"{setting}.base_url: cannot reach {cfg.base_url} ({type(exc).__name__}: {exc})") from None
    if status in (401, 403):
        given = f"the key in ${cfg.api_key_env}" if headers else f"no key (${cfg.api_key_env} is not set)"
        raise ConfigError(f"{setting}.api_key_env: {cfg.base_url} refused {given} (HTTP {status})")
    if status != 200:
        return f"{setting}: {url} answered HTTP {status}; the model name was not checked"
    try:
        served = [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return f"{setting}: {url} did not list models; the model name was not checked"
    if cfg.model_name not in served:
        raise ConfigError(f"{setting}.model: {cfg.model_name!r} is not served at {cfg.base_url} "
                          f"(it serves: {', '.join(served[:10]) or 'nothing'})")
    return None


class OpenAIEngine(Engine):
    """Any server speaking /v1/chat/completions (vLLM, SGLang, hosted APIs)."""

    def __init__(self, cfg: EngineConfig, sampling: SamplingConfig, base_url: str | None = None):
        super().__init__(cfg, sampling)
        self.base_url = (base_url or cfg.base_url or "").rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self.retries = 0
        self.chat_format: ChatFormat | None = None  # set: partial answers continue as raw text
        self._payload_base = {"model": self.model_name, **self._sampling_body(sampling), **cfg.extra_body}

    # per-request seeds: vLLM's CPU engine crashes on them, so its managed server drops them there
    sends_seed = True

    def _sampling_body(self, sampling: SamplingConfig) -> dict:
        body = {"n": sampling.n, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.stop:
            body["stop"] = sampling.stop
        if sampling.seed is not None and self.sends_seed:
            body["seed"] = sampling.seed
        return body

    async def load_chat_format(self, tokenizer: str) -> None:
        self.chat_format = await asyncio.to_thread(ChatFormat.load, tokenizer, self.cfg.chat_template)

    async def start(self) -> None:
        if self.chat_format is None and self.cfg.tokenizer:
            await self.load_chat_format(self.cfg.tokenizer)
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.cfg.max_concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=auth_headers(self.cfg),
                timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s),
            )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post_once(self, payload: dict, path: str = CHAT) -> GenerationResult:
        assert self._session is not None, "engine not started"
        url = f"{self.base_url}{path}"
        try:
            async with self._session.post(url, json=payload) as resp:
                body = await resp.read()
                if resp.status in RETRY_STATUS:
                    raise RetryableError(f"HTTP {resp.status}", _retry_after(resp.headers))
                if resp.status >= 400:
                    return GenerationResult(error=f"HTTP {resp.status}: {body[:300].decode('utf-8', 'replace')}",
                                            transient=resp.status in SETTING_STATUS)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from None
        try:
            data = json.loads(body)
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            completions = [Completion(_choice_text(c), c.get("finish_reason"),
                                      stop_reason=_stop_reason(c)) for c in choices]
            exact = [len(c["token_ids"]) if isinstance(c.get("token_ids"), list) else None for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RetryableError(f"malformed response: {type(exc).__name__}") from None
        usage = data.get("usage") or {}
        total = usage.get("completion_tokens")
        if completions and None not in exact:  # vLLM's return_token_ids
            for c, k in zip(completions, exact):
                c.completion_tokens = k
        elif total is not None and completions:
            # The API reports one total for all n samples; split it evenly.
            share, extra = divmod(int(total), len(completions))
            for i, c in enumerate(completions):
                c.completion_tokens = share + (1 if i < extra else 0)
        return GenerationResult(completions=completions, prompt_tokens=usage.get("prompt_tokens"))

    async def continue_generation(self, messages, partial, sampling):
        if self.chat_format is not None:
            # the prompt rendered here + the partial text, as raw completion:
            # no template can drop the thinking the continuation builds on
            prompt = self.chat_format.continuation(messages, partial)
            return await self._send(self._payload(sampling, prompt=prompt), COMPLETIONS)
        # vLLM's and SGLang's chat endpoints continue a final assistant message
        # (right for templates that keep an assistant turn whole, as SmolLM2's)
        return await self._send(self._payload(sampling, messages=[*messages, {"role": "assistant", "content": partial}],
                                              continue_final_message=True, add_generation_prompt=False), CHAT)

    async def _retry(self, payload: dict, first_error: RetryableError, path: str) -> GenerationResult:
        if self.cfg.max_retries == 0:
            return GenerationResult(error=f"gave up after 1 attempt: {first_error}", transient=True)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(RetryableError),
                stop=stop_after_attempt(self.cfg.max_retries),
                wait=_Wait(multiplier=0.5, max=30.0),
                reraise=True,
            ):
                with attempt:
                    self.retries += 1
                    if attempt.retry_state.attempt_number == 1:
                        # first backoff: 0.25-0.75 s with jitter, never less than Retry-After
                        await asyncio.sleep(max(first_error.retry_after or 0, 0.25 + 0.5 * random.random()))
                    return_value = await self._post_once(payload, path)
            return return_value
        except RetryableError as exc:
            return GenerationResult(error=f"gave up after {self.cfg.max_retries + 1} attempts: {exc}", transient=True)

    def _payload(self, sampling: SamplingConfig | None, **fields) -> dict:
        payload = dict(self._payload_base, **fields)
        if sampling is not None:
            payload.pop("stop", None)
            payload.update(self._sampling_body(sampling), **self.cfg.extra_body)  # the job's extra_body has the last word
        return payload

    async def generate(self, messages: list[dict[str, str]], sampling: SamplingConfig | None = None) -> GenerationResult:
        return await self._send(self._payload(sampling, messages=messages), CHAT)

    async def _send(self, payload: dict, path: str) -> GenerationResult:
        started = time.perf_counter()
        try:
            # The first attempt outside tenacity: its bookkeeping costs ~15% of
            # the client's time at thousands of requests a second.
            result = await self._post_once(payload, path)
        except RetryableError as first_error:
            result = await self._retry(payload, first_error, path)
        result.latency_s = time.perf_counter() - started
        return result
