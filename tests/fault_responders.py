"""Responders for the fake OpenAI server used by the fault tests (tests/test_faults_stages.py)."""

from __future__ import annotations

from fake_generate_responder import _payload, respond


def outage_for_marked(body: dict) -> str:
    """A partial outage: every request about a critique whose text holds ``[[outage]]`` fails
    with HTTP 500 (the server turns a responder error into a 500); the others are answered."""
    p = _payload(body)
    if "[[outage]]" in (p.get("description") or p.get("critique") or ""):
        raise RuntimeError("simulated outage for this critique")
    return respond(body)
