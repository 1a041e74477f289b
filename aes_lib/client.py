"""The shared OpenAI-compatible chat client: bounded concurrency, rate limits, retries, cache.

Generation and evaluation both send many chat requests; this module makes that safe at scale:

- a synchronous facade (:meth:`LLMClient.run`) over asyncio, with at most ``concurrency``
  requests in flight; it also works inside Jupyter, where an event loop is already running
  (the coroutine then runs in a worker thread);
- token-bucket limits on requests and tokens per minute;
- retries with exponential back-off and jitter on HTTP 429, 5xx, time-outs and broken replies;
- bounded re-asks when the caller's ``validate`` rejects a reply (with a correction, or the same
  messages again), and optionally the last reply kept when every ask fails;
- a persistent SQLite cache keyed by (model, prompt version, hash of the messages and sampling
  settings), written as each reply arrives, so a rerun or a resume after a crash sends no
  request twice;
- token counts and cost per run (:meth:`LLMClient.usage_summary`), a dry-run estimate
  (:meth:`LLMClient.estimate`) and OpenAI Batch API files (:meth:`LLMClient.batch_export`,
  :meth:`LLMClient.batch_import`).

The API key is read from the environment variable named by ``api_key_env`` when the first
request goes out; only that name is ever stored or logged. ``openai`` is imported lazily.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import logging
import mimetypes
import os
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from aes_lib import redaction
from aes_lib.config import Config, require

log = logging.getLogger(__name__)

#: Rough token cost of one image in a vision message, by OpenAI's ``detail`` setting.
IMAGE_TOKENS = {"low": 85, "high": 765, "auto": 765}


@dataclass
class ClientConfig(Config):
    base_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or "
                "http://localhost:11434/v1 (Ollama); None = api.openai.com"})
    model: str = field(default="gpt-4o-mini", metadata={"help": "model name sent with each request"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "name of the environment variable holding the key (the key itself is never stored)"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight at once"})
    requests_per_minute: int = field(default=0, metadata={"help": "request rate limit; 0 = none"})
    tokens_per_minute: int = field(default=0, metadata={
        "help": "token rate limit (estimated prompt + max_tokens); 0 = none"})
    max_retries: int = field(default=5, metadata={
        "help": "retries of one request on 429, 5xx, time-out or a broken reply"})
    max_reasks: int = field(default=2, metadata={
        "help": "re-asks when the reply fails the caller's validation, before rejecting it"})
    backoff_base_s: float = field(default=1.0, metadata={
        "help": "first back-off delay; doubles each retry, with jitter"})
    backoff_max_s: float = field(default=60.0, metadata={"help": "longest back-off delay"})
    retry_after_max_s: float = field(default=600.0, metadata={
        "help": "longest wait a server's Retry-After may ask for: the wait is at least the "
                "server's value up to this ceiling (not capped by backoff_max_s)"})
    timeout_s: float = field(default=120.0, metadata={"help": "time-out of one HTTP request"})
    cache_path: str | None = field(default=None, metadata={
        "help": "SQLite cache file; None = no cache"})
    temperature: float = field(default=0.2, metadata={"help": "sampling temperature"})
    max_tokens: int = field(default=1024, metadata={"help": "longest reply, in tokens"})
    json_mode: bool = field(default=True, metadata={
        "help": "ask for a JSON object (response_format json_object)"})
    image_detail: str = field(default="low", metadata={"help": "vision detail: low | high | auto"})
    input_price_per_mtok: float | None = field(default=None, metadata={
        "help": "USD per million prompt tokens; None = the list price of a model in KNOWN_PRICES "
                "(gpt-4o-mini, gpt-4o), else the price is unknown and no cost is given"})
    output_price_per_mtok: float | None = field(default=None, metadata={
        "help": "USD per million completion tokens; None = as input_price_per_mtok"})

    def prices(self) -> tuple[float, float] | None:
        """(input, output) USD per million tokens: the configured ones, else the model's list
        price from :data:`KNOWN_PRICES` (a dated snapshot such as ``gpt-4o-2024-08-06`` counts as
        its model), else None: the price is unknown."""
        known = KNOWN_PRICES.get(self.model) or KNOWN_PRICES.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", self.model))
        if self.input_price_per_mtok is not None and self.output_price_per_mtok is not None:
            return float(self.input_price_per_mtok), float(self.output_price_per_mtok)
        if known is None or self.input_price_per_mtok is not None or self.output_price_per_mtok is not None:
            return None   # no list price, or only one of the two prices given
        return known

    def check(self) -> None:
        require(isinstance(self.model, str) and self.model.strip() != "", "model", "must not be empty")
        require(self.api_key_env.strip() != "", "api_key_env", "must name an environment variable")
        require(not self.api_key_env.startswith("sk-"), "api_key_env",
                "holds what looks like a key: give the NAME of the environment variable instead")
        require(self.concurrency >= 1, "concurrency", "must be at least 1")
        for k in ("requests_per_minute", "tokens_per_minute", "max_retries", "max_reasks"):
            require(getattr(self, k) >= 0, k, "must be 0 or more")
        require(self.timeout_s > 0, "timeout_s", "must be positive")
        require(self.backoff_base_s >= 0 and self.backoff_max_s >= 0, "backoff_base_s",
                "must be 0 or more")
        require(self.retry_after_max_s >= 0, "retry_after_max_s", "must be 0 or more")
        require(self.max_tokens >= 1, "max_tokens", "must be at least 1")
        require(self.image_detail in IMAGE_TOKENS, "image_detail", "must be low, high or auto")
        require(all(p is None or p >= 0 for p in (self.input_price_per_mtok, self.output_price_per_mtok)),
                "input_price_per_mtok", "prices must be 0 or more")
        require((self.input_price_per_mtok is None) == (self.output_price_per_mtok is None),
                "output_price_per_mtok", "give both prices (input and output) or neither")


#: List prices, USD per million (prompt, completion) tokens, of the models this project names in
#: its docs and notebooks, as OpenAI's pricing page listed them for the standard (not Batch)
#: API in 2024 (gpt-4o: the gpt-4o-2024-08-06 snapshot's). Any other model has no price here:
#: set input_price_per_mtok and output_price_per_mtok, or its cost is reported as unknown.
KNOWN_PRICES: dict[str, tuple[float, float]] = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)}


def price_note(cfg: "ClientConfig") -> str:
    """How a cost was priced, in words: the configured prices, a list price, or unknown."""
    prices = cfg.prices()
    if prices is None:
        return (f"price unknown for model {cfg.model!r}: set input_price_per_mtok and "
                f"output_price_per_mtok (USD per million tokens)")
    given = cfg.input_price_per_mtok is not None
    return (f"${prices[0]:g} / ${prices[1]:g} per million prompt / completion tokens "
            + ("(configured)" if given else f"({cfg.model} list price)"))


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


#: How a reply that fails ``validate`` is asked again (:attr:`ChatRequest.reask`).
REASK_STYLES = ("correct", "repeat")


@dataclass
class ChatRequest:
    """One chat request. ``key`` names it in results and logs (e.g. ``refine:<critique id>``);
    ``validate(text)`` returns the parsed value or raises to have the reply re-asked (at most
    ``max_reasks`` times).

    ``reask``: ``"correct"`` sends the reply back with a request to fix it as JSON; ``"repeat"``
    sends the request's own messages again, unchanged (AesBench's official scripts re-ask a short
    reply so). ``reask_temperature``: the temperature of re-asks (None = the config's).
    ``keep_last``: when the last re-ask fails validation too, the result is the last reply (ok,
    ``parsed`` None, ``invalid`` = the reason) instead of a failure; it is cached as such, and a
    cached kept reply is asked again only when ``max_reasks`` grew since."""

    key: str
    messages: list[dict]
    validate: Callable[[str], Any] | None = None
    prompt_version: str = ""
    reask: str = "correct"
    reask_temperature: float | None = None
    keep_last: bool = False

    def __post_init__(self) -> None:
        if self.reask not in REASK_STYLES:
            raise ValueError(f"ChatRequest {self.key!r}: reask must be one of {', '.join(REASK_STYLES)}")


@dataclass
class ChatResult:
    key: str
    ok: bool
    text: str = ""
    parsed: Any = None
    error: str = ""
    usage: dict = field(default_factory=dict)
    cached: bool = False
    attempts: int = 0
    reasks: int = 0        # re-asks sent for this request in this run
    invalid: str = ""      # keep_last: why the kept reply still fails validation ("" = valid)


def image_data_url(path: str | Path) -> str:
    """``data:image/...;base64,...`` for an image file, for vision messages."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: image not found")
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def messages_hash(messages: list[dict]) -> str:
    """sha256 of the canonical JSON of ``messages`` (the fake test server uses the same)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def estimate_tokens(messages: list[dict], image_detail: str = "low") -> int:
    """Prompt tokens, estimated as characters / 4 plus a fixed cost per image."""
    chars, images = 0, 0
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, str):
            chars += len(content)
            continue
        for part in content or []:
            if part.get("type") == "image_url":
                images += 1
            else:
                chars += len(str(part.get("text", "")))
    return chars // 4 + 4 * len(messages) + images * IMAGE_TOKENS[image_detail]


class TokenBucket:
    """A refilling bucket of ``per_minute`` units; ``acquire(n)`` waits until n units are there.

    ``clock`` and ``sleep`` are injectable so the arithmetic is testable without waiting.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.clock = clock
        self.last = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait_time(self, n: float) -> float:
        """Seconds until ``n`` units are available (0 = now); takes them when available."""
        self._refill()
        n = min(n, self.capacity)
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    async def acquire(self, n: float = 1.0, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        while (delay := self.wait_time(n)) > 0:
            await sleep(delay)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0.5, 1.5] x base x 2^attempt, capped."""
    return min(cap, base * (2 ** attempt)) * rng.uniform(0.5, 1.5)


class ResponseCache:
    """SQLite store of validated replies; every insert is committed at once (crash-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS replies (cache_key TEXT PRIMARY KEY, model TEXT, "
            "prompt_version TEXT, messages_sha256 TEXT, request_key TEXT, text TEXT, usage TEXT, "
            "created REAL)")
        self.db.commit()

    def get(self, cache_key: str) -> tuple[str, dict] | None:
        with self._lock:
            row = self.db.execute("SELECT text, usage FROM replies WHERE cache_key = ?",
                                  (cache_key,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1] or "{}"))

    def put(self, cache_key: str, model: str, prompt_version: str, msg_hash: str, request_key: str,
            text: str, usage: dict) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (cache_key, model, prompt_version, msg_hash, request_key, text,
                             json.dumps(usage), time.time()))
            self.db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self.db.close()


_RETRYABLE_STATUS = {408, 409, 429}
#: Answers that every further request would get too: the run stops at the first one.
_FATAL_STATUS = {401: "the API key was refused", 403: "access was denied",
                 404: "the model or endpoint does not exist"}


#: Words in a 400 / 422 reply that mean every further request would get it too: OpenAI-compatible
#: proxies answer an unknown model or a bad key so (LiteLLM: HTTP 400 "Invalid model name passed
#: in model=...", "No connected db."). Any other 400 fails its own request only. Regexes, matched
#: on the lower-cased message.
_FATAL_MESSAGES = (("invalid model name", "the model is unknown to the server"),
                   ("model_not_found", "the model is unknown to the server"),
                   ("model not found", "the model is unknown to the server"),
                   (r"model\b[^.]{0,80}\bdoes not exist", "the model is unknown to the server"),
                   ("no connected db", "the server cannot check keys (no connected db)"),
                   ("invalid api key", "the API key was refused"),
                   ("incorrect api key", "the API key was refused"),
                   ("invalid_api_key", "the API key was refused"),
                   ("authentication error", "the API key was refused"),
                   ("unauthorized", "the API key was refused"))


def fatal_reason(e: BaseException) -> str | None:
    """Why every request would be refused like ``e`` (None when only this request failed)."""
    status = getattr(e, "status_code", None)
    if status in _FATAL_STATUS:
        return _FATAL_STATUS[status]
    if status in (400, 422):
        text = f"{e} {getattr(e, 'body', '')}".lower()
        for pattern, reason in _FATAL_MESSAGES:
            if re.search(pattern, text):
                return reason
    return None


class FatalAPIError(ValueError):
    """The server refused in a way every request would be refused (bad key, unknown model)."""
#: The OpenAI Batch API's limits per input file (requests; bytes: "200 MB", taken as 10^6 bytes).
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200_000_000
#: workers sharing one HTTP connection pool (see LLMClient._run_all)
SHARD_SIZE = 8


class _BrokenReply(Exception):
    """A 200 answer without a usable completion (not JSON, no choices)."""


class _TotalTimeout(Exception):
    """No complete reply within ``timeout_s`` (retried like a timeout)."""


class LLMClient:
    """Send many chat requests safely; see the module docstring."""

    def __init__(self, cfg: ClientConfig | None = None, seed: int = 0, api_key: str | None = None):
        """``api_key`` (optional) is kept in memory only, never in the config or any file;
        without it the key comes from the environment variable ``cfg.api_key_env``."""
        self.cfg = cfg or ClientConfig()
        self.cfg.check()
        self.__api_key = api_key
        self._rng = random.Random(seed)
        self._cache: ResponseCache | None = None
        self._usage_lock = threading.Lock()
        self.reset_usage()

    # --- bookkeeping ----------------------------------------------------------------------
    def reset_usage(self) -> None:
        self._usage = {"requests_sent": 0, "retries": 0, "reasks": 0, "cache_hits": 0,
                       "failed": 0, "succeeded": 0, "kept_invalid": 0, "prompt_tokens": 0,
                       "completion_tokens": 0,
                       "cached_prompt_tokens": 0, "cached_completion_tokens": 0, "seconds": 0.0}

    def _add(self, **counts: float) -> None:
        with self._usage_lock:
            for k, v in counts.items():
                self._usage[k] += v

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """USD for these tokens; None when the model's price is unknown (never another model's)."""
        prices = self.cfg.prices()
        if prices is None:
            return None
        return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6

    def usage_summary(self) -> dict:
        """Tokens sent and cost (USD) of the requests this client actually sent, plus cache hits."""
        u = dict(self._usage)
        u["total_tokens"] = u["prompt_tokens"] + u["completion_tokens"]
        u["cost_usd"] = _round(self.cost(u["prompt_tokens"], u["completion_tokens"]), 6)
        u["cost_saved_by_cache_usd"] = _round(
            self.cost(u["cached_prompt_tokens"], u["cached_completion_tokens"]), 6)
        u["model"] = self.cfg.model
        u["base_url"] = self.cfg.base_url or "https://api.openai.com/v1"
        u["api_key_env"] = self.cfg.api_key_env
        prices = self.cfg.prices()
        u["input_price_per_mtok"], u["output_price_per_mtok"] = prices or (None, None)
        u["price"] = price_note(self.cfg)
        return u

    # --- cache ----------------------------------------------------------------------------
    @property
    def cache(self) -> ResponseCache | None:
        if self._cache is None and self.cfg.cache_path:
            self._cache = ResponseCache(self.cfg.cache_path)
        return self._cache

    def request_body(self, req: ChatRequest) -> dict:
        body: dict[str, Any] = {"model": self.cfg.model, "messages": req.messages,
                                "temperature": self.cfg.temperature,
                                "max_tokens": self.cfg.max_tokens}
        if self.cfg.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def cache_key(self, req: ChatRequest) -> str:
        """sha256 over (model, prompt version, messages hash, sampling settings)."""
        return self._cache_key(req.prompt_version, messages_hash(req.messages))

    def _cache_key(self, prompt_version: str, msg_hash: str) -> str:
        settings = [self.cfg.temperature, self.cfg.max_tokens, self.cfg.json_mode]
        parts = [self.cfg.model, prompt_version, msg_hash, json.dumps(settings)]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def cached(self, req: ChatRequest) -> ChatResult | None:
        """The cached, re-validated result of ``req``, or None."""
        if self.cache is None:
            return None
        hit = self.cache.get(self.cache_key(req))
        if hit is None:
            return None
        text, usage = hit
        try:
            parsed = req.validate(text) if req.validate else text
        except Exception as e:
            if req.keep_last and usage.get("asks", 0) >= self.cfg.max_reasks + 1:
                # kept after as many asks as allowed now: the run's decided reply
                return ChatResult(req.key, True, text, None, "", usage, cached=True,
                                  invalid=f"{type(e).__name__}: {e}")
            # validation got stricter since, or more asks are allowed now: ask again
            log.info("cached reply for %s does not validate (%s): asking again", req.key, e)
            return None
        return ChatResult(req.key, True, text, parsed, "", usage, cached=True)

    # --- the openai client ----------------------------------------------------------------
    def _api_key(self) -> str:
        key = self.__api_key or os.environ.get(self.cfg.api_key_env, "")
        if not key:
            if self.cfg.base_url is None:
                raise ValueError(f"environment variable {self.cfg.api_key_env} is not set: export "
                                 f"your OpenAI key there, or set base_url to a local server")
            key = "EMPTY"  # vLLM / Ollama accept any key
        return key

    def _make_async_client(self, connections: int | None = None) -> Any:
        from openai import AsyncOpenAI

        for name in ("httpx", "httpx2", "openai"):  # one INFO line per request is noise at scale
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        api_key = self._api_key()
        redaction.register(api_key)   # never in a reply, cache entry, log line or error we keep
        redaction.install_log_redaction()
        try:  # a pool sized to the concurrency: the default (1,000) costs CPU per request
            from openai import DefaultAsyncHttpxClient

            n = connections or self.cfg.concurrency
            limits = type(openai_limits())(max_connections=n, max_keepalive_connections=n)
            http_client = DefaultAsyncHttpxClient(limits=limits, timeout=self.cfg.timeout_s)
        except Exception:  # pragma: no cover - other openai versions: their default pool
            http_client = None
        return AsyncOpenAI(api_key=api_key, base_url=self.cfg.base_url, timeout=self.cfg.timeout_s,
                           max_retries=0, http_client=http_client)

    # --- running ----------------------------------------------------------------------------
    def run(self, requests: list[ChatRequest], progress: bool = True) -> list[ChatResult]:
        """Send every request (cache first); results in the order of ``requests``."""
        keys = [r.key for r in requests]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"request keys must be unique: {dup!r} appears more than once")
        if not requests:
            return []
        coro_factory = lambda: self._run_all(requests, progress)  # noqa: E731
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro_factory())
        # inside Jupyter (or any running loop): run our own loop in a worker thread
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aes-llm") as pool:
            return pool.submit(lambda: asyncio.run(coro_factory())).result()

    async def _run_all(self, requests: list[ChatRequest], progress: bool) -> list[ChatResult]:
        from tqdm.auto import tqdm

        t0 = time.monotonic()
        results: list[ChatResult | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):
            hit = self.cached(req)
            if hit is not None:
                results[i] = hit
                self._add(cache_hits=1, cached_prompt_tokens=hit.usage.get("prompt_tokens", 0),
                          cached_completion_tokens=hit.usage.get("completion_tokens", 0))
            else:
                todo.append(i)
        if todo:
            log.info("%d requests: %d from the cache, %d to send to %s (model %s, concurrency %d)",
                     len(requests), len(requests) - len(todo), len(todo),
                     self.cfg.base_url or "api.openai.com", self.cfg.model, self.cfg.concurrency)
            # workers, not one task per request: at most `concurrency` in flight, and each
            # group of SHARD_SIZE workers has its own small connection pool (httpcore's pool
            # scans every connection for each request, so one big pool costs CPU per request)
            n_workers = min(self.cfg.concurrency, len(todo))
            n_shards = -(-n_workers // SHARD_SIZE)
            clients = [self._make_async_client(-(-n_workers // n_shards)) for _ in range(n_shards)]
            rpm = TokenBucket(self.cfg.requests_per_minute) if self.cfg.requests_per_minute else None
            tpm = TokenBucket(self.cfg.tokens_per_minute) if self.cfg.tokens_per_minute else None
            bar = tqdm(total=len(todo), desc=f"LLM {self.cfg.model}", disable=not progress,
                       leave=False)
            queue = iter(todo)

            async def worker(w: int) -> None:
                client = clients[w % n_shards]
                for i in queue:  # a shared iterator: each index is taken by exactly one worker
                    results[i] = await self._one(client, requests[i], rpm, tpm)
                    bar.update(1)

            try:
                await asyncio.gather(*(worker(w) for w in range(n_workers)))
            finally:
                bar.close()
                for client in clients:
                    await client.close()
        self._add(seconds=time.monotonic() - t0)
        return [r for r in results if r is not None]

    async def _one(self, client: Any, req: ChatRequest, rpm: TokenBucket | None,
                   tpm: TokenBucket | None) -> ChatResult:
        messages = list(req.messages)
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        attempts, text, last_error = 0, "", ""
        temperature: float | None = None   # the config's for the first ask
        for ask in range(self.cfg.max_reasks + 1):
            try:
                text, u, n = await self._send(client, messages, rpm, tpm, temperature)
            except Exception as e:  # gave up after retries, or a non-retryable error
                status = getattr(e, "status_code", None)
                reason = fatal_reason(e)
                if reason is not None:  # no point sending the other N requests one by one
                    raise FatalAPIError(
                        f"{self.cfg.base_url or 'api.openai.com'} answered HTTP {status} for model "
                        f"{self.cfg.model!r}: {reason} ({_describe(e)}); stopped, nothing more sent "
                        f"(replies already received are cached)") from None
                attempts += getattr(e, "_aes_attempts", 1)
                self._add(failed=1)
                log.warning("request %s failed: %s", req.key, _describe(e))
                return ChatResult(req.key, False, text, None, _describe(e), usage, False, attempts, ask)
            attempts += n
            for k in usage:
                usage[k] += u.get(k, 0)
            try:
                parsed = req.validate(text) if req.validate else text
            except Exception as e:
                last_error = f"{type(e).__name__}: {e}"
                if ask < self.cfg.max_reasks:
                    self._add(reasks=1)
                    log.info("reply to %s did not validate (%s): asking again", req.key, last_error)
                    if req.reask == "correct":
                        messages = list(req.messages) + [
                            {"role": "assistant", "content": text},
                            {"role": "user", "content": f"Your reply was not valid: {last_error}. "
                                                        "Reply again, with JSON only, fixing that."}]
                    temperature = req.reask_temperature
                continue
            if self.cache is not None:
                self.cache.put(self.cache_key(req), self.cfg.model, req.prompt_version,
                               messages_hash(req.messages), req.key, text, usage)
            self._add(succeeded=1)
            return ChatResult(req.key, True, text, parsed, "", usage, False, attempts, ask)
        asks = self.cfg.max_reasks + 1
        if req.keep_last:
            log.warning("reply to %s still fails validation after %d asks (%s): kept as given",
                        req.key, asks, last_error)
            if self.cache is not None:   # with the number of asks, so a higher limit asks again
                self.cache.put(self.cache_key(req), self.cfg.model, req.prompt_version,
                               messages_hash(req.messages), req.key, text, {**usage, "asks": asks})
            self._add(succeeded=1, kept_invalid=1)
            return ChatResult(req.key, True, text, None, "", usage, False, attempts, asks - 1, last_error)
        self._add(failed=1)
        error = f"invalid reply after {asks} tries: {last_error}"
        log.warning("request %s rejected: %s", req.key, error)
        return ChatResult(req.key, False, text, None, error, usage, False, attempts, asks - 1)

    async def _send(self, client: Any, messages: list[dict], rpm: TokenBucket | None,
                    tpm: TokenBucket | None, temperature: float | None = None) -> tuple[str, dict, int]:
        """One completion with retries (``temperature``: None = the config's); returns (text,
        usage, attempts)."""
        import openai

        body = self.request_body(ChatRequest("", messages))
        if temperature is not None:
            body["temperature"] = temperature
        est = estimate_tokens(messages, self.cfg.image_detail) + self.cfg.max_tokens
        for attempt in range(self.cfg.max_retries + 1):
            if rpm is not None:
                await rpm.acquire(1)
            if tpm is not None:
                await tpm.acquire(est)
            self._add(requests_sent=1)
            retry_after = None
            try:
                # the SDK's own POST (auth, headers, error mapping); the reply is read as a plain
                # dict, which skips per-request pydantic work that dominates CPU at scale
                # timeout_s bounds the whole request: httpx's timeout is per read, so a server
                # that drips a byte at a time would otherwise never time out
                try:
                    resp = await asyncio.wait_for(client.post("/chat/completions", body=body, cast_to=dict),
                                                  timeout=self.cfg.timeout_s)
                except asyncio.TimeoutError:
                    raise _TotalTimeout(f"no complete reply within timeout_s={self.cfg.timeout_s:g} s") from None
                try:
                    text = resp["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    raise _BrokenReply(f"reply without a completion: {redaction.redact(str(resp))[:120]!r}") from None
                if not isinstance(text, str):
                    raise _BrokenReply("reply without message content")
                text = redaction.redact(text)
                u = resp.get("usage") or {}
                usage = {"prompt_tokens": int(u.get("prompt_tokens") or 0),
                         "completion_tokens": int(u.get("completion_tokens") or 0)}
                self._add(**usage)
                return text, usage, attempt + 1
            except openai.APIStatusError as e:
                if e.status_code not in _RETRYABLE_STATUS and e.status_code < 500:
                    e._aes_attempts = attempt + 1  # type: ignore[attr-defined]
                    raise
                error: Exception = e
                retry_after = _retry_after(e)
            except (openai.APITimeoutError, openai.APIConnectionError, _TotalTimeout,
                    openai.APIResponseValidationError, _BrokenReply, json.JSONDecodeError) as e:
                error = e
            if attempt == self.cfg.max_retries:
                error._aes_attempts = attempt + 1  # type: ignore[attr-defined]
                raise error
            delay = backoff_delay(attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng)
            if retry_after is not None:
                delay = max(delay, retry_after_wait(retry_after, self.cfg.retry_after_max_s))
            self._add(retries=1)
            log.debug("retry %d after %.2fs: %s", attempt + 1, delay, _describe(error))
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # --- planning and the Batch API -----------------------------------------------------------
    def estimate(self, requests: Iterable[ChatRequest], expected_completion_tokens: int | None = None
                 ) -> dict:
        """Dry run: how many requests would be sent, their tokens and cost; sends nothing.
        ``requests`` is read once, one at a time (a generator keeps memory to one request)."""
        n_requests = n_send = prompt = 0
        for r in requests:
            n_requests += 1
            if self.cached(r) is None:
                n_send += 1
                prompt += estimate_tokens(r.messages, self.cfg.image_detail)
        completion = n_send * (expected_completion_tokens or self.cfg.max_tokens)
        minutes = []
        if self.cfg.requests_per_minute:
            minutes.append(n_send / self.cfg.requests_per_minute)
        if self.cfg.tokens_per_minute:
            minutes.append((prompt + n_send * self.cfg.max_tokens) / self.cfg.tokens_per_minute)
        return {"requests": n_requests, "cached": n_requests - n_send,
                "to_send": n_send, "est_prompt_tokens": prompt,
                "est_completion_tokens": completion,
                "est_cost_usd": _round(self.cost(prompt, completion), 4),
                "est_batch_cost_usd": _round(None if self.cost(prompt, completion) is None
                                             else self.cost(prompt, completion) / 2, 4),
                "price": price_note(self.cfg),
                "min_minutes_at_rate_limits": round(max(minutes), 2) if minutes else 0.0,
                "model": self.cfg.model}

    def batch_export(self, requests: Iterable[ChatRequest], path: str | Path,
                     max_requests: int = BATCH_MAX_REQUESTS, max_bytes: int = BATCH_MAX_BYTES) -> dict:
        """Write the uncached requests as OpenAI Batch API input files (one JSON line each,
        ``custom_id`` = the request key), each within ``max_requests`` lines and ``max_bytes``
        bytes (the Batch API's limits by default). One file fits: it is ``path``; more: they are
        ``<stem>.part001<suffix>``, ``<stem>.part002<suffix>``, ... beside it (files of an earlier
        export to the same ``path`` are removed first, so none is uploaded twice).

        Streaming: ``requests`` is read once, one at a time, and each line goes straight to a
        temporary file beside ``path``, renamed once full (the first when a second one starts,
        since only then is it known to be a part); memory holds one request, so a generator of
        requests keeps an export of any size bounded.

        Returns ``{"requests": total, "files": [{"path", "requests", "bytes"}, ...]}``."""
        if max_requests < 1 or max_bytes < 1:
            raise ValueError("batch_export: max_requests and max_bytes must be at least 1")
        path = Path(path)
        for old in batch_part_files(path) + ([path] if path.exists() else []):
            old.unlink()
            log.info("removed %s of an earlier export", old)
        path.parent.mkdir(parents=True, exist_ok=True)
        files: list[dict] = []
        unnamed: Path | None = None          # the first full file, named once the split is known
        current: _LineFile | None = None
        total = 0

        def finish(f: _LineFile) -> None:
            nonlocal unnamed
            f.close()
            files.append({"path": str(f.tmp), "requests": f.lines, "bytes": f.size})
            if len(files) == 1:
                unnamed = f.tmp
                return
            if len(files) == 2:               # a second file: the export is split into parts
                _rename(files[0], _part_path(path, 1))
                unnamed = None
            _rename(files[-1], _part_path(path, len(files)))

        try:
            for r in requests:
                if self.cached(r) is not None:
                    continue
                line = (json.dumps({"custom_id": r.key, "method": "POST", "url": "/v1/chat/completions",
                                    "body": self.request_body(r)}, ensure_ascii=False) + "\n").encode("utf-8")
                if len(line) > max_bytes:
                    raise ValueError(f"batch_export: request {r.key!r} alone is {len(line)} bytes, over "
                                     f"max_bytes={max_bytes}")
                if current is not None and (current.lines >= max_requests
                                            or current.size + len(line) > max_bytes):
                    finish(current)
                    current = None
                if current is None:
                    current = _LineFile(path)
                current.write(line)
                total += 1
            finish(current if current is not None else _LineFile(path))   # maybe empty
            current = None
            if unnamed is not None:              # everything fits in one file
                _rename(files[0], path)
        except BaseException:   # no half-written or unnamed file is left behind
            if current is not None:
                current.close()
                current.tmp.unlink(missing_ok=True)
            if unnamed is not None:
                unnamed.unlink(missing_ok=True)
            raise
        log.info("wrote %d batch requests to %d file(s): %s", total, len(files),
                 ", ".join(f["path"] for f in files))
        return {"requests": total, "files": files}

    def batch_import(self, requests: Iterable[ChatRequest], paths: str | Path | list) -> dict:
        """Read Batch API output files (one path or a list, in any order, in one call or over
        several calls); store every reply that validates in the cache, so the next :meth:`run`
        (or export) leaves them out. Returns counts over all files and the errors of keys still
        without a reply (a key that failed in one file and came back in another is no error).

        ``requests`` is read once; only each request's key, cache key, messages hash, prompt
        version and validator are kept, so a generator of requests keeps memory small."""
        if self.cache is None:
            raise ValueError("batch_import needs cache_path: the imported replies are kept there")
        given = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        if not given:
            raise ValueError("batch_import: no results file given")
        for path in given:
            if not path.exists():
                raise FileNotFoundError(f"{path}: batch results file not found")
        by_key: dict[str, _ImportTarget] = {}
        for r in requests:
            msg_hash = messages_hash(r.messages)
            by_key[r.key] = _ImportTarget(self._cache_key(r.prompt_version, msg_hash), msg_hash,
                                          r.prompt_version, r.validate)
        counts = {"imported": 0, "invalid": 0, "failed": 0, "unknown": 0}
        errors: dict[str, str] = {}
        for path in given:
            file_counts = self._import_file(path, by_key, errors)
            for k, v in file_counts.items():
                counts[k] += v
            log.info("batch import from %s: %s", path, file_counts)
        errors = {k: v for k, v in errors.items() if k not in by_key or not self._has_valid_reply(by_key[k])}
        return {**counts, "files": len(given), "errors": errors}

    def _has_valid_reply(self, target: "_ImportTarget") -> bool:
        hit = self.cache.get(target.cache_key) if self.cache is not None else None
        if hit is None:
            return False
        try:
            if target.validate:
                target.validate(hit[0])
        except Exception:
            return False
        return True

    def _import_file(self, path: Path, by_key: dict[str, "_ImportTarget"], errors: dict[str, str]) -> dict:
        counts = {"imported": 0, "invalid": 0, "failed": 0, "unknown": 0}
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
                key = row.get("custom_id")
                if key not in by_key:
                    counts["unknown"] += 1
                    errors[str(key)] = "custom_id matches no current request"
                    continue
                resp = row.get("response") or {}
                if row.get("error") or resp.get("status_code", 200) != 200:
                    counts["failed"] += 1
                    errors[key] = str(row.get("error") or f"status {resp.get('status_code')}")
                    continue
                body = resp.get("body") or {}
                target = by_key[key]
                try:
                    text = body["choices"][0]["message"]["content"]
                    if target.validate:
                        target.validate(text)
                except Exception as e:
                    counts["invalid"] += 1
                    errors[key] = f"{type(e).__name__}: {e}"
                    continue
                u = body.get("usage") or {}
                usage = {"prompt_tokens": u.get("prompt_tokens", 0),
                         "completion_tokens": u.get("completion_tokens", 0)}
                self.cache.put(target.cache_key, self.cfg.model, target.prompt_version,
                               target.messages_sha256, key, redaction.redact(text), usage)
                counts["imported"] += 1
        return counts

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


@dataclass
class _ImportTarget:
    """What importing a reply needs of a request (not its messages, which may hold images)."""

    cache_key: str
    messages_sha256: str
    prompt_version: str
    validate: Callable[[str], Any] | None


class _LineFile:
    """A batch file being written: a temporary file beside ``path`` (exclusive create, the
    usual permissions), fsynced on close."""

    def __init__(self, path: Path):
        self.tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        self.fh = open(self.tmp, "xb")
        self.lines = self.size = 0

    def write(self, line: bytes) -> None:
        self.fh.write(line)
        self.lines += 1
        self.size += len(line)

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()


def _rename(info: dict, target: Path) -> None:
    os.replace(info["path"], target)
    info["path"] = str(target)


def _part_path(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}.part{index:03d}{path.suffix}")


def batch_part_files(path: str | Path) -> list[Path]:
    """The part files a split :meth:`LLMClient.batch_export` to ``path`` wrote, in order."""
    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.part\d{3}" + re.escape(path.suffix) + "$")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.match(p.name))


def openai_limits() -> Any:
    """The connection-limits object of the HTTP library the installed openai SDK uses."""
    from openai._constants import DEFAULT_CONNECTION_LIMITS

    return DEFAULT_CONNECTION_LIMITS


def retry_after_wait(retry_after: float, ceiling: float) -> float:
    """How long to honour a server's Retry-After: its value, up to ``ceiling`` (logged when cut)."""
    if retry_after > ceiling:
        log.warning("the server asks to retry after %.0f s; waiting retry_after_max_s = %.0f s",
                    retry_after, ceiling)
        return ceiling
    return max(0.0, retry_after)


def _retry_after(e: Any) -> float | None:
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000.0
        if "retry-after" in headers:
            value = str(headers["retry-after"]).strip()
            if value.replace(".", "", 1).isdigit():
                return float(value)
            from email.utils import parsedate_to_datetime   # the HTTP-date form

            when = parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return None


def _describe(e: BaseException) -> str:
    status = getattr(e, "status_code", None)
    name = type(e).__name__
    msg = redaction.redact(str(e)).splitlines()[0][:200] if str(e) else ""
    return f"{name} (HTTP {status}): {msg}" if status else f"{name}: {msg}"
