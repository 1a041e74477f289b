"""Responder for the fake OpenAI server: the reply is the text the request sent (server process).

Lets a test see, through a real socket and the real client, exactly which prompt arrived."""


def respond(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content
