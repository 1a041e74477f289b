"""A fake OpenAI-compatible chat-completions server, run as a REAL separate process on 127.0.0.1.

Tests (generation, evaluation) and ``bench/generation_throughput.py`` start it with
:func:`start_server`; it answers ``POST /v1/chat/completions`` (and ``/chat/completions``) over a
real socket, so the real ``openai`` client is exercised end to end.

Behaviour switches (``mode``), set at start or later through ``POST /_control``:

- ``ok``: a valid completion whose content comes from the responder (default: a small JSON object).
- ``429_then_ok``: the first ``fail_count`` requests get HTTP 429, later ones succeed.
- ``500``: every request gets HTTP 500 (``500_then_ok`` fails only the first ``fail_count``).
- ``timeout``: the server sleeps ``hang_s`` seconds before answering (``timeout_then_ok`` only
  for the first ``fail_count`` requests).
- ``non_json``: HTTP 200, a valid completion whose content is not JSON.
- ``bad_body``: HTTP 200 with a body that is not JSON at all.
- ``missing_fields``: HTTP 200, content is a JSON object without the fields a caller expects.
- ``401`` / ``404``: every request is refused (a wrong key / an unknown model), as OpenAI does.
- ``400_model`` / ``400_nodb``: every request gets HTTP 400 as a LiteLLM proxy answers an
  unknown model ("Invalid model name passed in model=...") or a virtual key it cannot check
  ("No connected db.").
- ``400_bad_request``: every request gets an ordinary HTTP 400 about that request alone (an
  image the server cannot read): a client must not stop the run for it.
- ``short_then_ok``: the first ``fail_count`` requests with the same ``messages`` get the bare
  letter ``"B"`` (a reply AesBench's scripts ask again for), later ones the responder's content.

``latency_ms`` delays every answer. ``responder`` (``"module:function"``, importable in the
server process, e.g. a file next to this one) maps the request body (a dict) to the reply
content (a string); evaluation and generation tests plug in their own.

Endpoints besides the API: ``GET /_stats`` (``requests``: count of API requests, ``by_hash``:
count per sha256 of the canonical ``messages`` JSON, ``last_body``, ``last_authorization``: the
last request's Authorization header), ``POST /_control``
(JSON with any of ``mode, fail_count, latency_ms, hang_s, responder``), ``POST /_reset``
(zero the counters).

Command line: ``python tests/fake_openai_server.py --port 0 --mode ok`` prints
``LISTENING <port>`` on stdout once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

MODES = ("ok", "429_then_ok", "500", "500_then_ok", "timeout", "timeout_then_ok", "non_json",
         "bad_body", "missing_fields", "401", "404", "400_model", "400_nodb", "400_bad_request",
         "short_then_ok")


def messages_hash(messages: Any) -> str:
    """sha256 of the canonical JSON of a request's ``messages`` (the client's cache uses the same)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def default_responder(body: dict) -> str:
    last = body.get("messages", [{}])[-1].get("content", "")
    if isinstance(last, list):
        last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
    return json.dumps({"reply": "ok", "echo_chars": len(str(last))})


class State:
    def __init__(self, mode: str = "ok", fail_count: int = 1, latency_ms: float = 0.0,
                 hang_s: float = 30.0, responder: str = ""):
        self.mode, self.fail_count, self.latency_ms, self.hang_s = mode, fail_count, latency_ms, hang_s
        self.responder_name = ""
        self.responder: Callable[[dict], str] = default_responder
        self.set_responder(responder)
        self.requests = 0
        self.by_hash: dict[str, int] = {}
        self.last_body: Any = None
        self.last_authorization = ""

    def set_responder(self, name: str) -> None:
        if not name:
            self.responder_name, self.responder = "", default_responder
            return
        module, _, func = name.partition(":")
        self.responder = getattr(importlib.import_module(module), func)
        self.responder_name = name

    def control(self, data: dict) -> None:
        for key in ("mode", "fail_count", "latency_ms", "hang_s"):
            if key in data:
                setattr(self, key, data[key])
        if "responder" in data:
            self.set_responder(data["responder"])
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")

    def stats(self) -> dict:
        return {"requests": self.requests, "by_hash": self.by_hash, "mode": self.mode,
                "last_body": self.last_body, "last_authorization": self.last_authorization}


def _completion(body: dict, content: str) -> dict:
    prompt_chars = len(json.dumps(body.get("messages", [])))
    completion_tokens = max(1, len(content) // 4)
    prompt_tokens = max(1, prompt_chars // 4)
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


async def _answer(state: State, method: str, path: str, raw: bytes,
                  authorization: str = "") -> tuple[int, bytes, str]:
    """Return (status, body bytes, content type)."""
    if method == "GET" and path == "/_stats":
        return 200, json.dumps(state.stats()).encode(), "application/json"
    if method == "POST" and path == "/_reset":
        state.requests, state.by_hash, state.last_body = 0, {}, None
        return 200, b"{}", "application/json"
    if method == "POST" and path == "/_control":
        try:
            state.control(json.loads(raw or b"{}"))
        except (ValueError, ImportError, AttributeError) as e:
            return 400, json.dumps({"error": str(e)}).encode(), "application/json"
        return 200, json.dumps(state.stats()).encode(), "application/json"
    if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
        return 404, json.dumps({"error": {"message": f"no route {method} {path}"}}).encode(), \
            "application/json"
    state.requests += 1
    state.last_authorization = authorization
    n = state.requests
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return 400, b'{"error": {"message": "request body is not JSON"}}', "application/json"
    state.last_body = body
    h = messages_hash(body.get("messages"))
    state.by_hash[h] = state.by_hash.get(h, 0) + 1
    if state.latency_ms:
        await asyncio.sleep(state.latency_ms / 1000.0)
    mode = state.mode
    failing = n <= state.fail_count
    if mode == "429_then_ok" and failing:
        return 429, b'{"error": {"message": "rate limited (fake)", "type": "rate_limit"}}', \
            "application/json"
    if mode == "401":
        return 401, b'{"error": {"message": "Incorrect API key provided (fake)", "code": "invalid_api_key"}}', \
            "application/json"
    if mode == "404":
        return 404, b'{"error": {"message": "The model does not exist (fake)", "code": "model_not_found"}}', \
            "application/json"
    if mode == "400_model":
        message = (f"/chat/completions: Invalid model name passed in model={body.get('model')}. "
                   "Call `/v1/models` to view available models for your key.")
        return 400, json.dumps({"error": {"message": message, "type": "None", "param": "None",
                                          "code": "400"}}).encode(), "application/json"
    if mode == "400_nodb":
        return 400, json.dumps({"error": {"message": "No connected db.", "type": "no_db_connection",
                                          "param": None, "code": "400"}}).encode(), "application/json"
    if mode == "400_bad_request":
        return 400, json.dumps({"error": {"message": "Invalid image data (fake)",
                                          "type": "invalid_request_error", "param": "messages",
                                          "code": "400"}}).encode(), "application/json"
    if mode == "500" or (mode == "500_then_ok" and failing):
        return 500, b'{"error": {"message": "internal error (fake)"}}', "application/json"
    if mode == "timeout" or (mode == "timeout_then_ok" and failing):
        await asyncio.sleep(state.hang_s)
    if mode == "bad_body":
        return 200, b"<html>this is not JSON</html>", "application/json"
    if mode == "non_json":
        content = "Sure! Here is my answer, in plain prose rather than JSON."
    elif mode == "short_then_ok" and state.by_hash[h] <= state.fail_count:
        content = "B"
    elif mode == "missing_fields":
        content = json.dumps({"unexpected": True})
    else:
        try:
            content = state.responder(body)
        except Exception as e:  # a broken responder is a test bug: say so in the reply
            return 500, json.dumps({"error": {"message": f"responder failed: {e!r}"}}).encode(), \
                "application/json"
    return 200, json.dumps(_completion(body, content)).encode(), "application/json"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error"}


async def _handle(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            method, path, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            raw = await reader.readexactly(length) if length else b""
            status, body, ctype = await _answer(state, method, path.split("?")[0], raw,
                                                headers.get("authorization", ""))
            extra = "retry-after-ms: 10\r\n" if status == 429 else ""
            writer.write((f"HTTP/1.1 {status} {_REASONS.get(status, 'X')}\r\n"
                          f"content-type: {ctype}\r\ncontent-length: {len(body)}\r\n{extra}"
                          f"connection: keep-alive\r\n\r\n").encode() + body)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def _serve(state: State, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(state, r, w), "127.0.0.1", port,
                                        backlog=1024)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--mode", default="ok", choices=MODES)
    p.add_argument("--fail-count", type=int, default=1)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--responder", default="", help="module:function mapping body -> content")
    a = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    state = State(a.mode, a.fail_count, a.latency_ms, a.hang_s, a.responder)
    try:
        asyncio.run(_serve(state, a.port))
    except KeyboardInterrupt:
        pass


# --- used by tests and the bench: start / control / stop the server process ------------------

class FakeServer:
    """Handle on a running server process."""

    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"

    def _call(self, method: str, path: str, data: dict | None = None) -> dict:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if data is None else json.dumps(data).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self._call("GET", "/_stats")

    def requests(self) -> int:
        return int(self.stats()["requests"])

    def control(self, **settings: Any) -> dict:
        return self._call("POST", "/_control", settings)

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(mode: str = "ok", latency_ms: float = 0.0, fail_count: int = 1,
                 hang_s: float = 30.0, responder: str = "", timeout_s: float = 20.0) -> FakeServer:
    """Start the server as a separate process on a free port and wait until it listens."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--mode", mode,
           "--latency-ms", str(latency_ms), "--fail-count", str(fail_count), "--hang-s", str(hang_s)]
    if responder:
        cmd += ["--responder", responder]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("LISTENING"):
            return FakeServer(proc, int(line.split()[1]))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"fake OpenAI server did not start (last line: {line!r})")


if __name__ == "__main__":
    main()
