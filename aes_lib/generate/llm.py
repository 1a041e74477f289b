"""The ``openai`` backend: refine and assemble prompts, reply validators, reply -> drafts.

Prompts are the versioned files ``aes_lib/prompts/refine_<v>.txt`` and ``assemble_<v>.txt``.
A reply that is not the JSON the prompt asks for raises in its validator, so the client re-asks
(a bounded number of times) and then rejects it with the reason. Items inside a valid reply that
break a rule (duplicate options, a correct answer that disagrees with the critique) are rejected
one by one later, by :func:`aes_lib.generate.core.check_draft`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from aes_lib.client import ChatRequest, image_data_url
from aes_lib.generate.offline import BAND_JUDGMENT, PROMPTS_DIR, band, clean_text
from aes_lib.schema import ATTRIBUTES, GRADE_TO_LEVEL, QTYPES, Critique

OPEN_KEYS = ("description", "interpretation", "suggestion")


def load_prompt(name: str) -> str:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: prompt file not found (prompt {name!r})")
    return path.read_text(encoding="utf-8")


class ReplyError(ValueError):
    """A reply that does not follow the prompt's JSON layout."""


def _json_object(text: str) -> dict:
    text = text.strip()
    if text.startswith("```"):  # tolerate a fenced block
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReplyError(f"reply is not JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ReplyError(f"reply must be a JSON object, got {type(data).__name__}")
    return data


def _need_str(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReplyError(f"{where}: field '{key}' is missing or not a non-empty string")
    return value.strip()


# --- refine -----------------------------------------------------------------------------------

def refine_request(c: Critique, version: str, image_path: Path | None, detail: str) -> ChatRequest:
    payload = {"task": "refine", "grade": c.grade,
               "attributes": {a: c.attributes[a] for a in ATTRIBUTES if a in c.attributes},
               "description": c.description, "suggestion": c.suggestion}
    user: Any = json.dumps(payload, ensure_ascii=False, sort_keys=True)
    if image_path is not None:
        user = [{"type": "text", "text": user},
                {"type": "image_url", "image_url": {"url": image_data_url(image_path), "detail": detail}}]
    messages = [{"role": "system", "content": load_prompt(f"refine_{version}")},
                {"role": "user", "content": user}]
    return ChatRequest(f"refine:{c.id}", messages, refine_validator(c), f"refine_{version}")


def refine_validator(c: Critique) -> Callable[[str], dict]:
    def validate(text: str) -> dict:
        data = _json_object(text)
        critique = _need_str(data, "critique", "refine reply")
        if len(critique.split()) < 5:
            raise ReplyError("refine reply: 'critique' is shorter than 5 words")
        grade = str(data.get("grade", "")).strip().lower()
        if grade != c.grade:
            raise ReplyError(f"refine reply: 'grade' must stay {c.grade!r} (the annotator's), got {grade!r}")
        return {"critique_id": c.id, "image_id": c.image_id, "grade": c.grade,
                "level": GRADE_TO_LEVEL[c.grade], "text": critique,
                "suggestion": clean_text(c.suggestion),
                "attributes": {a: dict(j) for a, j in c.attributes.items()},
                "annotator_kind": c.annotator_kind}
    return validate


# --- assemble ---------------------------------------------------------------------------------

def assemble_request(c: Critique, refined: dict, version: str, t: dict, n_perception: int,
                     n_empathy: int) -> ChatRequest:
    payload = {"task": "assemble", "critique": refined["text"], "grade": c.grade,
               "level": GRADE_TO_LEVEL[c.grade],
               "attributes": {a: {"rating": c.attributes[a]["rating"],
                                  "band": BAND_JUDGMENT[band(c.attributes[a]["rating"], t)],
                                  "word": c.attributes[a].get("word")}
                              for a in ATTRIBUTES if a in c.attributes},
               "annotator_suggestion": c.suggestion,
               "wanted": {"perception": n_perception, "empathy": n_empathy}}
    messages = [{"role": "system", "content": load_prompt(f"assemble_{version}")},
                {"role": "user", "content": json.dumps(payload, ensure_ascii=False, sort_keys=True)}]
    return ChatRequest(f"assemble:{c.id}", messages, assemble_validator, f"assemble_{version}")


def assemble_validator(text: str) -> dict:
    """Structure only: every key present with the right shape. Returns the parsed object."""
    data = _json_object(text)
    mcq = data.get("mcq")
    if not isinstance(mcq, list):
        raise ReplyError("assemble reply: 'mcq' must be a list")
    for i, item in enumerate(mcq):
        where = f"assemble reply: mcq[{i}]"
        if not isinstance(item, dict):
            raise ReplyError(f"{where} must be an object")
        for key in ("attribute", "qtype", "question", "answer", "judgment"):
            _need_str(item, key, where)
        if not isinstance(item.get("options"), list):
            raise ReplyError(f"{where}: 'options' must be a list")
    level = data.get("level")
    if not isinstance(level, dict) or not isinstance(level.get("options"), list):
        raise ReplyError("assemble reply: 'level' must be an object with 'options'")
    _need_str(level, "question", "assemble reply: level")
    _need_str(level, "answer", "assemble reply: level")
    for key in OPEN_KEYS:
        obj = data.get(key)
        if not isinstance(obj, dict):
            raise ReplyError(f"assemble reply: '{key}' must be an object {{question, answer}}")
        _need_str(obj, "question", f"assemble reply: {key}")
        _need_str(obj, "answer", f"assemble reply: {key}")
    conv = data.get("conversation")
    if not isinstance(conv, list) or not conv:
        raise ReplyError("assemble reply: 'conversation' must be a non-empty list of turns")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise ReplyError(f"assemble reply: conversation[{i}] must be an object")
        _need_str(turn, "question", f"assemble reply: conversation[{i}]")
        _need_str(turn, "answer", f"assemble reply: conversation[{i}]")
    return data


def _letter_index(answer: str) -> int:
    a = answer.strip().rstrip(".").upper()
    return ord(a[0]) - ord("A") if len(a) >= 1 and a[0].isalpha() and (len(a) == 1 or not a[1].isalpha()) else -1


def reply_to_drafts(data: dict, open_types: tuple[str, ...]) -> list[dict[str, Any]]:
    """Drafts in the offline backend's layout, ready for the same checks."""
    drafts: list[dict[str, Any]] = []
    counters = {"perception": 0, "empathy": 0}
    for item in data["mcq"]:
        dim = "empathy" if str(item.get("dimension", "")).lower().startswith("emp") else "perception"
        k = counters[dim]
        counters[dim] += 1
        qtype = item["qtype"].strip().lower()
        drafts.append({"slot": f"{dim[0]}{k}", "type": f"{dim}_mcq", "qtype": qtype,
                       "attribute": item["attribute"].strip(), "question": item["question"].strip(),
                       "options": [str(o).strip() for o in item["options"]],
                       "correct": _letter_index(item["answer"]),
                       "judgment": item["judgment"].strip().lower()})
    if "level" in open_types:
        lv = data["level"]
        drafts.append({"slot": "lvl", "type": "level_mcq", "qtype": "level", "attribute": "",
                       "question": lv["question"].strip(),
                       "options": [str(o).strip() for o in lv["options"]],
                       "correct": _letter_index(lv["answer"]), "judgment": ""})
    for key, slot in zip(OPEN_KEYS, ("desc", "interp", "sugg")):
        if key in open_types:
            obj = data[key]
            drafts.append({"slot": slot, "type": key, "qtype": "open", "attribute": "",
                           "turns": [(obj["question"].strip(), obj["answer"].strip())]})
    if "conversation" in open_types:
        drafts.append({"slot": "conv", "type": "conversation", "qtype": "multi-turn", "attribute": "",
                       "turns": [(t["question"].strip(), t["answer"].strip()) for t in data["conversation"]]})
    return drafts


__all__ = ["refine_request", "assemble_request", "assemble_validator", "reply_to_drafts",
           "refine_validator", "ReplyError", "QTYPES"]
