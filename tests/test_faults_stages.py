"""Faults across the stages (issue #14): unwritable outputs and other OSErrors are one line and
exit 2 in every subcommand; unknown options are named; `aes generate` says what to pass without a
manifest and exits 3 when critiques are lost; a server's Retry-After is honoured beyond
backoff_max_s; a key file in an unknown layout is an error that writes nothing.

Real `aes` processes, real files, and servers as separate processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from aes_lib.client import ChatRequest, ClientConfig, LLMClient
from aes_lib.schema import Critique, read_jsonl, write_jsonl
from conftest import REPO
from fake_openai_server import start_server
from generate_fixtures import make_inputs

TESTS = REPO / "tests"
FIX = TESTS / "fixtures_evaluate" / "aesbench_mini"


def aes(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ": error:" in line]


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, path: Path | str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = error_lines(proc)
    assert line.startswith(f"aes {command}: error:") and str(path) in line, line


def test_unwritable_output_is_one_line_and_exit_2_in_every_subcommand(tmp_path):
    blocker = tmp_path / "a_file"          # a regular file where a folder is needed: as root too
    blocker.write_text("not a folder")
    bad = blocker / "out"
    inputs = tmp_path / "in"
    make_inputs(inputs, n_photos=1, per_image=1)
    crit = inputs / "critiques" / "critiques.jsonl"
    csv_file = tmp_path / "lab.csv"
    csv_file.write_text("image,grade,description\na.png,good,A calm scene with soft light.\n")
    cases = {
        "data": ["data", "build", "--out", str(bad), "--photos", "coffee", "--max-side", "32"],
        "collect simulate": ["collect", "simulate", "--data", str(inputs / "data"), "--out", str(bad)],
        "collect import": ["collect", "import", str(csv_file), "--format", "csv", "--out", str(bad)],
        "collect stats": ["collect", "stats", "--out", str(bad)],
        "generate": ["generate", "--out", str(bad), "--critiques", str(crit), "--manifest",
                     str(inputs / "data" / "manifest.json"), "--no-progress"],
        "evaluate score": ["evaluate", "score", "--responses", str(FIX / "responses.json"), "--key",
                           str(FIX / "key.json"), "--bench", str(FIX / "annotations.json"), "--out", str(bad)],
        "report": ["report", "--out", str(bad)],
        "reproduce": ["reproduce", "--out", str(bad), "--profile", "smoke"],
    }
    for name, argv in cases.items():
        proc = aes(*argv)
        assert_one_line_error(proc, argv[0], blocker)
    # export to a file that cannot be created
    out = tmp_path / "ok"
    assert aes("collect", "import", str(csv_file), "--format", "csv", "--out", str(out)).returncode == 0
    proc = aes("collect", "export", "--out", str(out), "--file", str(bad / "x.jsonl"))
    assert_one_line_error(proc, "collect", blocker)
    # the critique store cannot be opened: SQLite's own message names no file, ours does
    db = out / "critiques" / "critiques.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.mkdir()
    proc = aes("collect", "stats", "--out", str(out))
    assert_one_line_error(proc, "collect", db)
    assert "cannot open the critique store" in proc.stderr
    # the reply cache of the API backend cannot be opened
    cache = inputs / "instructions" / "llm_cache.sqlite"
    cache.mkdir(parents=True)
    proc = aes("generate", "--out", str(inputs), "--backend", "openai", "--dry-run")
    assert_one_line_error(proc, "generate", inputs)
    assert "unable to open database file" in proc.stderr


def test_unknown_options_are_named_as_unknown_options():
    for argv, shown in ((["generate", "--unknownopt", "VALUE"], "--unknownopt VALUE"),
                        (["--bogus", "VALUE"], "--bogus VALUE"),
                        (["collect", "--bogus", "x", "stats"], "--bogus x"),
                        (["generate", "--bogus"], "--bogus")):
        proc = aes(*argv)
        assert proc.returncode == 2 and "invalid choice" not in proc.stderr, proc.stderr
        assert f"error: unrecognized arguments: {shown}" in proc.stderr
    # a real invalid choice is still reported as one
    proc = aes("generate", "nosuchstep")
    assert proc.returncode == 2 and "invalid choice: 'nosuchstep'" in proc.stderr


def test_generate_after_an_import_says_what_to_pass(tmp_path):
    out = tmp_path / "out"
    csv_file = tmp_path / "lab.csv"
    csv_file.write_text("image,grade,description,annotator\n"
                        + "".join(f"p{i}.png,good,A calm scene with soft light number {i}.,ann\n" for i in range(6)))
    assert aes("collect", "import", str(csv_file), "--format", "csv", "--out", str(out)).returncode == 0
    hint = "--manifest none --unlisted-images hash_split"
    proc = aes("generate", "--out", str(out), "--no-progress")
    assert_one_line_error(proc, "generate", out / "data" / "manifest.json")
    assert hint in proc.stderr
    proc = aes("generate", "--out", str(out), "--manifest", "none", "--no-progress")
    assert proc.returncode == 2 and hint in proc.stderr
    proc = aes("generate", "--out", str(out), "--manifest", "none", "--unlisted-images", "hash_split",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "instructions from 6 critiques" in proc.stdout


def test_partial_api_outage_exits_3_with_the_count_of_lost_critiques(tmp_path):
    make_inputs(tmp_path, n_photos=6, per_image=1)
    path = tmp_path / "critiques" / "critiques.jsonl"
    critiques = read_jsonl(path, Critique)
    assert len(critiques) == 12
    for c in critiques[2:5]:
        c.description += " [[outage]]"
    write_jsonl(path, critiques)
    (tmp_path / "cfg.yaml").write_text("client:\n  max_retries: 1\n  max_reasks: 0\n"
                                       "  backoff_base_s: 0.01\n  backoff_max_s: 0.02\n")
    env_key = "AES_FAULT_TEST_KEY"
    os.environ[env_key] = "sk-fault-test"
    try:
        with start_server(responder="fault_responders:outage_for_marked") as server:
            argv = ("generate", "--out", str(tmp_path), "--backend", "openai", "--base-url", server.base_url,
                    "--model", "fake-gpt", "--api-key-env", env_key, "--config", str(tmp_path / "cfg.yaml"),
                    "--no-progress")
            proc = aes(*argv)
            assert proc.returncode == 3, proc.stderr
            assert "3 of 12 critiques lost" in proc.stderr and "rerun the same command" in proc.stderr
            rejects = [json.loads(x) for x in (tmp_path / "instructions" / "rejects.jsonl").read_text().splitlines()]
            lost = {r["critique_id"] for r in rejects if r["stage"] in ("refine", "assemble")}
            assert lost == {c.id for c in critiques[2:5]}
            run = json.loads((tmp_path / "instructions" / "run.json").read_text())
            assert run["n_critiques_lost"] == 3
            # the outage ends: a rerun sends only the lost critiques' requests and exits 0
            server.control(responder="fake_generate_responder:respond")
            server.reset()
            proc = aes(*argv)
            assert proc.returncode == 0, proc.stderr
            assert server.requests() == 2 * 3
    finally:
        del os.environ[env_key]


RETRY_AFTER_SERVER = textwrap.dedent('''
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    retry_after = sys.argv[1]
    times = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"times": times})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            times.append(time.monotonic())
            if len(times) == 1:
                self._send(429, {"error": {"message": "slow down"}}, [("retry-after", retry_after)])
            else:
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": "{}"}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("LISTENING", server.server_address[1], flush=True)
    server.serve_forever()
''')


def _retry_gap(tmp_path: Path, retry_after: str, **cfg) -> float:
    script = tmp_path / "retry_after_server.py"
    script.write_text(RETRY_AFTER_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), retry_after], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        client = LLMClient(ClientConfig.from_dict({
            "base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "api_key_env": "AES_RA_KEY",
            "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 20, **cfg}))
        os.environ["AES_RA_KEY"] = "sk-ra"
        [r] = client.run([ChatRequest("k", [{"role": "user", "content": "hi"}], json.loads)], progress=False)
        assert r.ok and r.attempts == 2
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as resp:
            times = json.loads(resp.read())["times"]
        return times[1] - times[0]
    finally:
        os.environ.pop("AES_RA_KEY", None)
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_retry_after_is_honoured_beyond_backoff_max_up_to_its_own_ceiling(tmp_path):
    # backoff_max_s is 0.05 s, the server asks for 1 s: the client waits at least 1 s
    assert _retry_gap(tmp_path, "1", retry_after_max_s=30) >= 0.95
    # a server asking for 60 s is cut at retry_after_max_s
    assert _retry_gap(tmp_path, "60", retry_after_max_s=0.2) < 10


def test_key_file_in_an_unknown_layout_is_an_error_that_writes_nothing(tmp_path):
    out = tmp_path / "eval"
    base = ["evaluate", "score", "--responses", str(FIX / "responses.json"), "--bench",
            str(FIX / "annotations.json"), "--out", str(out), "--name", "responses"]
    assert aes(*base, "--key", str(FIX / "key.json")).returncode == 0
    results_csv = (out / "results.csv").read_bytes()
    results_json = (out / "results_responses.json").read_bytes()
    for content, problem in (({}, "the key file has no entries"),
                             ({"nat_001.jpg": {"answer": "A", "gt": "B"}}, "unknown key layout"),
                             ([1, 2], "expected a JSON object")):
        key = tmp_path / "key.json"
        key.write_text(json.dumps(content))
        proc = aes(*base, "--key", str(key))
        assert_one_line_error(proc, "evaluate", key)
        assert problem in proc.stderr
        assert (out / "results.csv").read_bytes() == results_csv
        assert (out / "results_responses.json").read_bytes() == results_json
