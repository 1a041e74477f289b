"""Responder for the fake OpenAI server: the first refine reply for each critique changes the
annotator's grade (a model "correcting" the human); asked again, it keeps it."""

from __future__ import annotations

import json

from fake_generate_responder import _payload, respond

_seen: dict[str, int] = {}
OTHER = {"excellent": "poor", "good": "bad", "fair": "excellent", "poor": "good", "bad": "fair"}


def change_grade_once(body: dict) -> str:
    p = _payload(body)
    reply = respond(body)
    if p["task"] != "refine":
        return reply
    key = json.dumps(p, sort_keys=True)
    _seen[key] = _seen.get(key, 0) + 1
    if _seen[key] == 1:
        data = json.loads(reply)
        data["grade"] = OTHER.get(p["grade"], "fair")
        return json.dumps(data)
    return reply
