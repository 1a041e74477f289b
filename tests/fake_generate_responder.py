"""Responder for the fake OpenAI server: plausible refine / assemble replies for generation tests.

It reads the JSON payload the generation prompts send and answers with JSON that follows the
prompt. A description containing ``[[bad-item]]`` makes the assemble reply include one item
whose correct answer disagrees with the critique (it must end up in rejects.jsonl).
"""

from __future__ import annotations

import json

PERCEPTION = ("technical_quality", "color_light", "composition", "content")


def _payload(body: dict) -> dict:
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        content = next(p["text"] for p in content if p.get("type") == "text")
    if not content.lstrip().startswith("{"):  # a re-ask: the payload is in the first user turn
        content = body["messages"][1]["content"]
        if isinstance(content, list):
            content = next(p["text"] for p in content if p.get("type") == "text")
    return json.loads(content)


def respond(body: dict) -> str:
    p = _payload(body)
    if p["task"] == "refine":
        text = " ".join(p["description"].replace("<p>", " ").replace("</p>", " ").split())
        return json.dumps({"critique": f"A refined critique: {text}. The grade is {p['grade']}.",
                           "grade": p["grade"]})
    mcq = []
    for attr, j in p["attributes"].items():
        dim = "perception" if attr in PERCEPTION else "empathy"
        mcq.append({"dimension": dim, "attribute": attr, "qtype": "how",
                    "question": f"How is the {attr.replace('_', ' ')} of this image?",
                    "options": ["Good", "Average", "Poor"],
                    "answer": "ABC"[["positive", "neutral", "negative"].index(j["band"])],
                    "judgment": j["band"]})
    if "[[bad-item]]" in p["critique"] and mcq:
        wrong = {"positive": "negative", "neutral": "positive", "negative": "positive"}
        mcq[0] = dict(mcq[0], judgment=wrong[mcq[0]["judgment"]], question="A wrong one?")
    level = p["level"]
    return json.dumps({
        "mcq": mcq,
        "level": {"question": "What is the aesthetic level of this image?",
                  "options": ["High", "Medium", "Low"], "answer": "ABC"[["high", "medium", "low"].index(level)]},
        "description": {"question": "Describe this image's aesthetics.", "answer": p["critique"]},
        "interpretation": {"question": "Why is it rated so?", "answer": f"It is {level}: {p['critique']}"},
        "suggestion": {"question": "How to improve it?", "answer": p.get("annotator_suggestion") or "Keep it."},
        "conversation": [{"question": "Is it good?", "answer": f"Its level is {level}."},
                         {"question": "Why?", "answer": p["critique"]}],
    })
