"""Responder for the fake OpenAI server in the evaluation tests (runs in the server process).

Judge requests (the rubric prompt) get a JSON verdict; answer requests get a sentence naming
option B (or, for open questions, a short critique).
"""

import json


def _text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def respond(body: dict) -> str:
    text = _text(body)
    if "Reference critique:" in text:
        return json.dumps({"relevance": 2, "precision": 1, "completeness": 1})
    if "Choose one from the following options:" in text:
        return "The answer is B."
    return "A calm, well lit photo with a balanced composition."
