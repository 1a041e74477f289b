"""The API client against servers that misbehave: one that drips its reply a byte at a time is
bounded by timeout_s in total; one that echoes the API key (in replies, in a 401) never gets it
written to a file, the cache, a log or the console. Real server processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aes_lib.client import ChatRequest, ClientConfig, LLMClient
from conftest import REPO
from generate_fixtures import make_inputs

KEY = "sk-test-ECHOED-0123456789abcdef"

SERVER = textwrap.dedent('''
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    sys.path.insert(0, sys.argv[2])
    from fake_generate_responder import respond

    mode = sys.argv[1]

    def salt(value, key):
        if isinstance(value, str):
            return value + f" (debug: authorization {key})"
        if isinstance(value, list):
            return [salt(v, key) for v in value]
        if isinstance(value, dict):
            return {k: (salt(v, key) if k in ("critique", "answer", "question") else v) for k, v in value.items()}
        return value

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            key = self.headers.get("authorization", "").removeprefix("Bearer ")
            if mode == "401":
                data = json.dumps({"error": {"message": f"Incorrect API key provided: {key}",
                                             "code": "invalid_api_key"}}).encode()
                status = 401
            else:
                content = respond(body) if mode == "echo" else "{}"
                if mode == "echo":
                    content = json.dumps(salt(json.loads(content), key))
                data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": content}}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
                status = 200
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if mode == "drip":   # headers at once, then one byte every 0.5 s: no read ever times out
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.5)
            else:
                self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("LISTENING", server.server_address[1], flush=True)
    server.serve_forever()
''')


@pytest.fixture
def server(tmp_path):
    procs = []

    def start(mode: str) -> str:
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        proc = subprocess.Popen([sys.executable, str(script), mode, str(Path(__file__).parent)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        port = int(proc.stdout.readline().split()[1])
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_server_that_drips_its_reply_is_cut_off_at_timeout_s(server, monkeypatch):
    url = server("drip")
    monkeypatch.setenv("AES_DRIP_KEY", "sk-drip")
    client = LLMClient(ClientConfig.from_dict({"base_url": url, "model": "m", "api_key_env": "AES_DRIP_KEY",
                                               "timeout_s": 2, "max_retries": 1, "backoff_base_s": 0.01,
                                               "backoff_max_s": 0.02}))
    t0 = time.monotonic()
    [r] = client.run([ChatRequest("k", [{"role": "user", "content": "hi"}], json.loads)], progress=False)
    elapsed = time.monotonic() - t0
    assert not r.ok and "timeout_s=2" in r.error and r.attempts == 2
    assert elapsed < 2 * 2 + 3, elapsed   # two tries of at most 2 s each, not the drip's ~60 s


def _aes(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env})


def test_a_key_the_server_echoes_is_written_nowhere(server, tmp_path):
    make_inputs(tmp_path, n_photos=6, per_image=1)
    url = server("echo")
    proc = _aes("generate", "--out", str(tmp_path), "--backend", "openai", "--base-url", url, "--model", "fake-gpt",
                "--api-key-env", "AES_ECHO_KEY", "--no-progress",
                env={"AES_ECHO_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    written = [p for p in (tmp_path / "instructions").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"instructions.jsonl", "refined.jsonl", "llava_train.json",
                                          "messages_train.jsonl", "llm_cache.sqlite"}
    leaks = [p.name for p in written if KEY.encode() in p.read_bytes()]
    assert not leaks and KEY not in proc.stderr + proc.stdout, leaks
    # the replies were kept (redacted), so the test did see the server echo the key
    assert "[REDACTED-API-KEY]" in (tmp_path / "instructions" / "refined.jsonl").read_text()
    with sqlite3.connect(tmp_path / "instructions" / "llm_cache.sqlite") as con:
        assert all(KEY not in str(row) for row in con.execute("SELECT * FROM replies"))


def test_a_401_that_quotes_the_key_prints_no_key(server, tmp_path):
    make_inputs(tmp_path, n_photos=6, per_image=1)
    url = server("401")
    proc = _aes("-v", "generate", "--out", str(tmp_path), "--backend", "openai", "--base-url", url,
                "--model", "fake-gpt", "--api-key-env", "AES_ECHO_KEY", "--no-progress", env={"AES_ECHO_KEY": KEY})
    assert proc.returncode != 0
    assert "401" in proc.stderr and KEY not in proc.stderr + proc.stdout, proc.stderr
    assert "[REDACTED-API-KEY]" in proc.stderr
