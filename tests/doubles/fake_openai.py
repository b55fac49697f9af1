"""A fake OpenAI-compatible chat server for tests and overhead benchmarks.

It answers instantly (or after `--latency`) with R1-shaped traces whose boxed
answer is right about half the time, deterministic per prompt and sample.
Run it as its own process so its CPU cost is not charged to the client:
`python tests/doubles/fake_openai.py --port 8000`.

`--faults 429=0.1,500=0.1,slow=0.05,drop=0.05,garbage=0.05` makes it misbehave
(see `Faults`); `/stats` counts the requests per outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
from collections import Counter

from aiohttp import web

_ANSWERS = ["6", "42", "36", "15", "66", "\\frac{3}{4}", "7", "12"]


_JUDGE_REPLIES = ["The forms agree.\nVERDICT: YES", "They differ.\nVERDICT: NO", "Hard to say; maybe."]

FAULT_KINDS = ("400", "429", "500", "503", "slow", "drop", "garbage")
OUTCOMES = ("ok", *FAULT_KINDS)


def fake_completion(prompt: str, index: int, seed: int | None = None) -> str:
    """Deterministic per prompt, sample index and (when the request has one) seed."""
    key = f"{prompt}|{index}" if seed is None else f"{prompt}|{seed}|{index}"
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    if "VERDICT: YES" in prompt:  # a judge prompt: yes, no or a non-answer
        return _JUDGE_REPLIES[h % len(_JUDGE_REPLIES)]
    easy = re.search(r"The answer is always (\S+?)\.", prompt)  # a problem every sample solves
    answer = easy.group(1) if easy else _ANSWERS[h % len(_ANSWERS)]
    return f"<think>\nLet me work through it carefully. {prompt[:40]}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


class Faults:
    """Which fault, if any, to inject into a request.

    SPEC is comma-separated `kind=probability` pairs (kinds: FAULT_KINDS,
    probabilities summing to at most 1). The draw for the k-th time the server
    sees a given request body is seeded by (seed, body, k), so a run's faults
    do not depend on the order in which concurrent requests arrive, and a
    retried request draws afresh. With `limit`, a request body is faulted at
    most that many times, then answered: a client retrying more often than
    that always gets through.
    """

    def __init__(self, spec: str = "", seed: int = 0, limit: int | None = None):
        if limit is not None and limit < 0:
            raise ValueError(f"fault limit must be >= 0, got {limit}")
        self.seed = seed
        self.limit = limit
        self.probs: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            kind, sep, raw = item.partition("=")
            kind = kind.strip()
            if not sep or kind not in FAULT_KINDS:
                raise ValueError(f"bad fault {item!r}: expected kind=probability, kind one of {', '.join(FAULT_KINDS)}")
            try:
                p = float(raw)
            except ValueError:
                raise ValueError(f"bad fault {item!r}: {raw!r} is not a probability") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"bad fault {item!r}: probability must be within [0, 1]")
            self.probs[kind] = self.probs.get(kind, 0.0) + p
        if sum(self.probs.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {sum(self.probs.values()):g} > 1")
        self._seen: Counter[bytes] = Counter()  # attempts per body digest
        self._faulted: Counter[bytes] = Counter()

    def __bool__(self) -> bool:
        return any(self.probs.values())

    def draw(self, body: bytes, attempt: int) -> tuple[str, float]:
        """(kind or "ok", a uniform number for the fault's own choices)."""
        digest = hashlib.sha256(b"%d|%d|" % (self.seed, attempt) + body).digest()
        rng = random.Random(digest)
        u = rng.random()
        for kind, p in self.probs.items():
            if u < p:
                return kind, rng.random()
            u -= p
        return "ok", rng.random()

    def next(self, body: bytes) -> tuple[str, float]:
        key = hashlib.sha256(body).digest()
        attempt = self._seen[key]
        self._seen[key] += 1
        kind, u = self.draw(body, attempt)
        if kind != "ok":
            if self.limit is not None and self._faulted[key] >= self.limit:
                return "ok", u
            self._faulted[key] += 1
        return kind, u


def _split_reasoning(text: str) -> dict:
    """The message a server's reasoning parser (vLLM's deepseek_r1) makes of
    a trace: the thinking in `reasoning_content`, the rest in `content`
    (None while the model is still thinking)."""
    before, close, after = text.partition("</think>")
    reasoning = before.removeprefix("<think>").strip("\n")
    return {"role": "assistant", "reasoning_content": reasoning, "content": after.lstrip("\n") if close else None}


def _answer(body: dict, prefilled: bool = False, split: bool = False) -> web.Response:
    """A chat reply; `prefilled`: as a model whose template put `<think>` in the prompt writes it (without the tag);
    `split`: through a reasoning parser."""
    raw = "prompt" in body  # /v1/completions: budget forcing continues the rendered prompt + partial answer
    prompt = body["prompt"] if raw else body["messages"][-1]["content"]
    n = int(body.get("n", 1))
    continuing = raw or bool(body.get("continue_final_message")) and body["messages"][-1]["role"] == "assistant"
    if continuing and not raw:  # budget forcing: finish the assistant's partial answer
        prompt = body["messages"][-2]["content"]
    choices = []
    max_tokens = int(body.get("max_tokens") or 1 << 30)
    for i in range(n):
        text = "42}$." if continuing else fake_completion(prompt, i, body.get("seed"))
        if prefilled and not continuing:
            text = text.removeprefix("<think>\n")
        words = text.split(" ")
        finish = "stop"
        if len(words) > max_tokens:  # one word = one token here
            text, finish = " ".join(words[:max_tokens]), "length"
        message = _split_reasoning(text) if split and not continuing else {"role": "assistant", "content": text}
        choices.append({"index": i, "finish_reason": finish, **({"text": text} if raw else {"message": message}),
                        "_words": len(re.findall(r"\S+", text))})
    tokens = sum(c.pop("_words") for c in choices)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": tokens}
    kind = "text_completion" if raw else "chat.completion"
    return web.Response(text=json.dumps({"id": "fake", "object": kind, "model": body.get("model"), "choices": choices, "usage": usage}), content_type="application/json")


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def make_app(latency_s: float = 0.0, faults: Faults | None = None, slow_s: float = 2.0,
             models: list[str] | None = None, api_key: str | None = None,
             hang_after: int | None = None, prefilled: bool = False, split: bool = False) -> web.Application:
    """`models`: what /v1/models lists (any name is answered unless given); `api_key`: 401 without it;
    `hang_after`: after that many chat requests, nothing (chat or health) is ever answered again;
    `prefilled`: chat replies start inside the thinking; `split`: the thinking comes back in `reasoning_content`.
    /stats keeps the last raw prompt continued."""
    faults = faults or Faults()
    outcomes = Counter(dict.fromkeys(OUTCOMES, 0))
    state = {"requests": 0, "outcomes": outcomes, "completions": 0, "last_prompt": None}

    def refused(request: web.Request) -> web.Response | None:
        if api_key and request.headers.get("Authorization") != f"Bearer {api_key}":
            return _error(401, "invalid api key", "AuthenticationError")
        return None

    async def list_models(request: web.Request) -> web.Response:
        return refused(request) or web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in (models or ["fake"])]})

    async def hang_if_due() -> None:
        if hang_after is not None and state["requests"] > hang_after:
            await asyncio.sleep(3600)  # alive, listening, never answering: a hung engine

    async def chat(request: web.Request) -> web.StreamResponse:
        state["requests"] += 1
        await hang_if_due()
        if (no := refused(request)) is not None:
            outcomes["401"] += 1
            return no
        raw = await request.read()
        try:
            body = json.loads(raw)
            if request.path == "/v1/completions":
                state["completions"] += 1
                state["last_prompt"] = str(body["prompt"])
            else:
                body["messages"][-1]["content"]
            int(body.get("n", 1))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            outcomes["400"] += 1
            return _error(400, f"bad request: {exc}", "BadRequestError")
        if models and body.get("model") not in models:
            outcomes["404"] += 1
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        kind, u = faults.next(raw) if faults else ("ok", 0.0)
        outcomes[kind] += 1
        if kind == "400":
            return _error(400, "bad request: injected fault", "BadRequestError")
        if kind == "429":
            return web.json_response({"error": {"message": "rate limited", "type": "RateLimitError"}},
                                     status=429, headers={"Retry-After": "0"})
        if kind in ("500", "503"):
            return _error(int(kind), "injected server error", "InternalServerError")
        if kind == "drop":  # close the connection without an answer
            request.transport.abort()
            raise asyncio.CancelledError
        if latency_s:
            await asyncio.sleep(latency_s)
        if kind == "slow":
            await asyncio.sleep(slow_s)
        if kind == "garbage":  # a 200 the client cannot use
            text = '{"id": "fake", "choices": [{"ind' if u < 0.5 else json.dumps({"id": "fake", "object": "chat.completion"})
            return web.Response(text=text, content_type="application/json")
        return _answer(body, prefilled, split)

    async def health(request: web.Request) -> web.Response:
        await hang_if_due()
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def metrics(request: web.Request) -> web.Response:
        """A vLLM-like /metrics page (names as vLLM's), so engine-metric plumbing can be tested without vLLM."""
        done = outcomes["ok"]
        lines = ["# TYPE vllm:num_requests_running gauge", f'vllm:num_requests_running{{model_name="fake"}} {state["requests"] - done}',
                 "# TYPE vllm:num_requests_waiting gauge", 'vllm:num_requests_waiting{model_name="fake"} 0',
                 "# TYPE vllm:kv_cache_usage_perc gauge", f'vllm:kv_cache_usage_perc{{model_name="fake"}} {min(1.0, 0.01 * done):.2f}',
                 "# TYPE vllm:generation_tokens_total counter", f'vllm:generation_tokens_total{{model_name="fake"}} {20 * done}']
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--faults", default="", metavar="SPEC",
                    help=f"kind=probability pairs, comma-separated, e.g. 429=0.1,drop=0.05 (kinds: {', '.join(FAULT_KINDS)})")
    ap.add_argument("--fault-seed", type=int, default=0)
    ap.add_argument("--fault-limit", type=int, default=None, metavar="K",
                    help="fault any one request body at most K times (default: no limit)")
    ap.add_argument("--slow-seconds", type=float, default=2.0, help="delay of a 'slow' fault")
    ap.add_argument("--models", default=None, help="comma-separated names served (default: answer any, list 'fake')")
    ap.add_argument("--api-key", default=None, help="answer 401 unless this bearer key is sent")
    ap.add_argument("--prefilled-think", action="store_true", help="chat replies omit the opening <think> (as after R1's newer templates)")
    ap.add_argument("--reasoning-split", action="store_true", help="thinking in reasoning_content, as a reasoning parser returns it")
    ap.add_argument("--hang-after", type=int, default=None, metavar="N", help="hang for good after N chat requests")
    args = ap.parse_args()
    try:
        faults = Faults(args.faults, args.fault_seed, args.fault_limit)
    except ValueError as exc:
        ap.error(str(exc))
    models = [m for m in (args.models or "").split(",") if m] or None
    web.run_app(make_app(args.latency, faults, args.slow_seconds, models, args.api_key, args.hang_after, args.prefilled_think,
                        args.reasoning_split), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
