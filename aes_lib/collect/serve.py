"""``aes collect serve``: the annotation tool as a small web app for a whole class at once.

A Starlette app served by uvicorn. The page (``aes_lib/assets/annotate.{html,js,css}``) walks
each annotator through the same protocol file, steps, keys and checks as notebook 01's tool;
everything it sends is checked again here (:mod:`aes_lib.collect.classroom`) and every submit is
committed to the one SQLite store (``<out>/critiques/critiques.db``) before the page hears "saved".

Access:

- the server binds 127.0.0.1 unless told ``--host``; on any other address a **join code** is
  required (``--join-code``, else a stored or new random one, printed at start). Without it every
  path answers 403 with only a form asking for the code: no page, no image, no store access;
- an annotator is a name plus a secret cookie set when the name is first taken; every request
  acts as that annotator only: their images, their critiques;
- images are served only from the manifest's folder, only the ones handed to the asking
  annotator;
- the teacher's view (``/teacher``) needs the **teacher code** (printed at start).
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import mimetypes
import re
import secrets
import socket
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from .classroom import ClassError, ClassSession, check_step
from .protocol import Protocol, load_protocol

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024            # bytes of one request body
ANNOTATOR_COOKIE, JOIN_COOKIE, TEACHER_COOKIE = "aes_annotator", "aes_join", "aes_teacher"
COOKIE_AGE = 14 * 24 * 3600
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _asset(name: str) -> str:
    return (resources.files("aes_lib") / "assets" / name).read_text(encoding="utf-8")


def protocol_for_page(p: Protocol) -> dict[str, Any]:
    """What the page needs to draw the protocol's steps (the same file notebook 01's tool uses)."""
    return {"id": p.id, "grade_question": p.grade_question,
            "grades": [{"key": g.key, "label": g.label, "shortcut": g.shortcut} for g in p.grades],
            "attributes": [{"key": a.key, "label": a.label, "question": a.question, "required": a.required,
                            "word_required": a.word_required} for a in p.attributes],
            "rating_labels": {str(k): v for k, v in p.rating_labels.items()},
            "description": {"question": p.description.question, "required": p.description.required,
                            "min_words": p.description.min_words},
            "suggestion": {"question": p.suggestion.question, "required": p.suggestion.required,
                           "min_words": p.suggestion.min_words},
            "flag_reasons": p.flag_reasons}


def create_app(session: ClassSession, image_root: str | Path, join_code: str | None, teacher_code: str,
               out_dir: str | Path = "outputs"):
    """The Starlette app over one :class:`ClassSession`. ``join_code`` None: no join code asked."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    root = Path(image_root).resolve()
    protocol_json = protocol_for_page(session.protocol)

    def secure(response: Response) -> Response:
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def problem(message: str, status: int = 400, problems: list[str] | None = None) -> Response:
        return secure(JSONResponse({"error": message, "problems": problems or [message]}, status_code=status))

    def cookie(response: Response, name: str, value: str) -> None:
        response.set_cookie(name, value, max_age=COOKIE_AGE, httponly=True, samesite="strict", path="/")

    def has(request: Request, name: str, code: str | None) -> bool:
        got = request.cookies.get(name, "")
        return bool(code) and secrets.compare_digest(got.encode(), code.encode())

    def teacher(request: Request) -> bool:
        return has(request, TEACHER_COOKIE, teacher_code)

    def joined(request: Request) -> bool:
        return join_code is None or has(request, JOIN_COOKIE, join_code) or teacher(request)

    def join_page(message: str = "", status: int = 403) -> Response:
        body = _asset("annotate_join.html").replace("{{message}}", html.escape(message))
        return secure(HTMLResponse(body, status_code=status))

    async def read_json(request: Request) -> Any:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ClassError("send the form as JSON (Content-Type: application/json)", 415)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY:
            raise ClassError(f"the form is too large ({int(declared) // 1024} KiB, at most "
                             f"{MAX_BODY // 1024} KiB): shorten the texts", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise ClassError(f"the form is too large (over {MAX_BODY // 1024} KiB): shorten the texts", 413)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ClassError("the form did not arrive as valid JSON; reload the page and try again") from None

    def api(fn: Callable[..., Awaitable[Response]], annotator_needed: bool = True):
        """An API endpoint: ClassErrors become clear JSON messages; the annotator comes from the cookie."""
        async def endpoint(request: Request) -> Response:
            try:
                name = None
                if annotator_needed:
                    name = await run_in_threadpool(session.who, request.cookies.get(ANNOTATOR_COOKIE))
                    if name is None:
                        return problem("type your name first (this browser has no annotator yet)", 401)
                return secure(await fn(request, name))
            except ClassError as e:
                return problem(str(e), e.status, e.problems)
        return endpoint

    async def state(request: Request, name: str) -> Response:
        image_id = await run_in_threadpool(session.current, name)
        return JSONResponse(await run_in_threadpool(_state, name, image_id))

    def _state(name: str, image_id: str | None) -> dict:
        record = session.images.get(image_id) if image_id else None
        return {"annotator": name, "progress": session.progress(name),
                "image": None if record is None else {
                    "id": record.id, "title": record.title, "url": f"/api/image/{quote(record.id)}",
                    "exists": _image_path(record.file) is not None},
                "history": session.history(name)}

    def _image_path(file: str) -> Path | None:
        path = (root / file).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    async def claim(request: Request, _: None) -> Response:
        data = await read_json(request)
        name, token = await run_in_threadpool(session.claim, (data or {}).get("name") if isinstance(data, dict)
                                              else None, request.cookies.get(ANNOTATOR_COOKIE))
        response = JSONResponse({"annotator": name})
        cookie(response, ANNOTATOR_COOKIE, token)
        log.info("annotator %r joined", name)
        return response

    async def submit(request: Request, name: str) -> Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise ClassError("the form must be a JSON object")
        image_id = data.get("image_id")
        if not isinstance(image_id, str) or image_id not in session.images:
            raise ClassError("unknown image", 404)
        critique = await run_in_threadpool(session.submit, name, image_id, data.get("answers"), data.get("seconds"))
        log.info("%s submitted %s", name, critique.id)
        return JSONResponse({"saved": critique.id, "image_id": image_id, "seconds_spent": critique.seconds_spent})

    async def pass_on(request: Request, name: str) -> Response:
        data = await read_json(request)
        if not isinstance(data, dict) or not isinstance(data.get("image_id"), str):
            raise ClassError("the form must name the image")
        kind = request.url.path.rsplit("/", 1)[-1]   # skip | flag
        await run_in_threadpool(session.pass_on, name, data["image_id"], kind, data.get("reason") or "")
        return JSONResponse({kind: data["image_id"]})

    async def check(request: Request, name: str) -> Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise ClassError("the form must be a JSON object")
        check_step(session.protocol, data.get("step"), data.get("answers"))
        return JSONResponse({"ok": True})

    async def heartbeat(request: Request, name: str) -> Response:
        await run_in_threadpool(session.heartbeat, name)
        return JSONResponse({"ok": True})

    async def own(request: Request, name: str) -> Response:
        c = await run_in_threadpool(session.own_critique, name, request.path_params["image_id"])
        if c is None:
            raise ClassError("you have no critique of that image", 404)
        return JSONResponse({"image_id": c.image_id, "grade": c.grade, "attributes": c.attributes,
                             "description": c.description, "suggestion": c.suggestion,
                             "seconds_spent": c.seconds_spent})

    async def image(request: Request, name: str) -> Response:
        image_id = request.path_params["image_id"]
        record = session.images.get(image_id)
        if record is None or not await run_in_threadpool(session.may_see, name, image_id):
            raise ClassError("that image is not yours to see", 404)
        path = _image_path(record.file)
        if path is None:
            raise ClassError(f"the image file of {image_id} is missing; flag it as broken", 404)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if not media.startswith("image/"):
            raise ClassError("not an image", 404)
        return FileResponse(path, media_type=media)

    async def protocol(request: Request, _: None) -> Response:
        return JSONResponse(protocol_json)

    async def teacher_json(request: Request, _: None) -> Response:
        if not teacher(request):
            raise ClassError("the teacher's view needs the teacher code", 403)
        return JSONResponse(await run_in_threadpool(session.overview))

    async def index(request: Request) -> Response:
        return secure(HTMLResponse(_asset("annotate.html")))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        kinds = {"annotate.js": "text/javascript", "annotate.css": "text/css"}
        if name not in kinds:
            return secure(Response("not found", 404))
        return secure(Response(_asset(name), media_type=kinds[name]))

    async def teacher_page(request: Request) -> Response:
        code = request.query_params.get("code")
        if code is not None:
            if secrets.compare_digest(code.encode(), teacher_code.encode()):
                response = RedirectResponse("/teacher", 303)
                cookie(response, TEACHER_COOKIE, teacher_code)
                return secure(response)
            return secure(HTMLResponse("<p>Wrong teacher code.</p>", status_code=403))
        if not teacher(request):
            return secure(HTMLResponse("<p>The teacher's view needs the teacher code: open the "
                                       "<code>/teacher?code=...</code> address printed when the server started.</p>",
                                       status_code=403))
        overview = await run_in_threadpool(session.overview)
        return secure(HTMLResponse(teacher_html(overview, out_dir)))

    async def join(request: Request) -> Response:
        if join_code is None:
            return secure(RedirectResponse("/", 303))
        code = request.query_params.get("join")
        if request.method == "POST":
            form = (await request.body())[:1024].decode("utf-8", "replace")
            code = next((v for k, v in (p.split("=", 1) for p in form.split("&") if "=" in p) if k == "code"), "")
            from urllib.parse import unquote_plus
            code = unquote_plus(code).strip()
        if code and secrets.compare_digest(code.encode(), join_code.encode()):
            response = RedirectResponse("/", 303)
            cookie(response, JOIN_COOKIE, join_code)
            return secure(response)
        return join_page("That is not the join code." if code else "")

    routes = [
        Route("/", index), Route("/join", join, methods=["GET", "POST"]),
        Route("/static/{name}", static), Route("/teacher", teacher_page),
        Route("/api/protocol", api(protocol, annotator_needed=False)),
        Route("/api/name", api(claim, annotator_needed=False), methods=["POST"]),
        Route("/api/state", api(state)),
        Route("/api/submit", api(submit), methods=["POST"]),
        Route("/api/check", api(check), methods=["POST"]),
        Route("/api/skip", api(pass_on), methods=["POST"], name="skip"),
        Route("/api/flag", api(pass_on), methods=["POST"], name="flag"),
        Route("/api/heartbeat", api(heartbeat), methods=["POST"]),
        Route("/api/critique/{image_id:str}", api(own)),
        Route("/api/image/{image_id:str}", api(image)),
        Route("/api/teacher", api(teacher_json, annotator_needed=False)),
    ]

    app = Starlette(routes=routes)

    class JoinGate:
        """Every path but /join answers 403 without the join code (a ``?join=`` link sets it)."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http" or join_code is None:
                return await self.inner(scope, receive, send)
            request = Request(scope, receive)
            if request.url.path in ("/join", "/teacher") or joined(request):
                return await self.inner(scope, receive, send)
            given = request.query_params.get("join")
            if given and secrets.compare_digest(given.encode(), join_code.encode()):
                response = RedirectResponse(request.url.path, 303)
                cookie(response, JOIN_COOKIE, join_code)
            elif request.url.path.startswith("/api/"):
                response = problem("this session needs the join code: open the address your teacher gave you", 403)
            else:
                response = join_page("")
            await secure(response)(scope, receive, send)

    return JoinGate(app)


def teacher_html(o: dict[str, Any], out_dir: str | Path) -> str:
    """The teacher's page: counts per annotator and image, time spent, agreement, stop and export."""
    esc = html.escape

    def alpha(v) -> str:
        return "undefined yet" if v is None else f"{v:.3f}"

    def seconds(v) -> str:
        return "" if v is None else f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min"

    annot_rows = "".join(
        f"<tr><td>{esc(r['annotator'])}</td><td>{r['critiques']}</td><td>{r['skips']}</td><td>{r['flags']}</td>"
        f"<td>{seconds(r['seconds'])}</td><td>{seconds(r['median_seconds'])}</td><td>{esc(r['working_on'])}</td></tr>"
        for r in o["annotators"])
    image_rows = "".join(
        f"<tr><td>{esc(r['image_id'])}</td><td>{r['critiques']} / {o['per_image_target']}</td>"
        f"<td>{esc(', '.join(r['annotators']))}</td><td>{r['skips']}</td><td>{r['flags']}"
        f"{' (withdrawn)' if r['withdrawn'] else ''}</td></tr>" for r in o["per_image"])
    agree = "".join(f"<tr><td>{esc(k)}</td><td class='alpha'>{alpha(v)}</td></tr>" for k, v in o["agreement"].items())
    filled = ", ".join(f"{n} with {k}" for k, n in o["images_by_critiques"].items())
    out = esc(str(out_dir))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="15"><title>Teacher's view: class annotation</title>
<link rel="stylesheet" href="/static/annotate.css"></head><body class="teacher">
<h1>The class's annotation session</h1>
<p id="summary"><b id="n-critiques">{o['critiques']}</b> human critiques by
<b id="n-annotators">{len(o['annotators'])}</b> annotators; <b id="n-complete">{o['complete_images']}</b> of
{o['images']} images have their {o['per_image_target']} critiques (images by critiques so far: {filled}).
Time spent in all: {seconds(o['seconds'])}. Updated {esc(o['as_of'])} (this page reloads every 15 s).</p>
<h2>Agreement among the human annotators so far</h2>
<p>Krippendorff's alpha (ordinal), measured on this session's critiques: 1 = full agreement, 0 = no
more than chance, below 0 = systematic disagreement. It is undefined until two annotators have
answered the same image with some spread of answers; read it once most images have their
{o['per_image_target']} critiques.</p>
<table id="agreement"><tr><th>question</th><th>alpha</th></tr>{agree}</table>
<h2>Per annotator</h2>
<table id="annotators"><tr><th>annotator</th><th>critiques</th><th>skips</th><th>flags</th><th>time spent</th>
<th>median per critique</th><th>working on</th></tr>{annot_rows}</table>
<h2>Per image</h2>
<table id="images"><tr><th>image</th><th>critiques</th><th>by</th><th>skips</th><th>flags</th></tr>{image_rows}</table>
<h2>Stop and export</h2>
<p>Every submit is already saved in <code>{out}/critiques/critiques.db</code>. To stop, press
<kbd>Ctrl</kbd>+<kbd>C</kbd> in the terminal running the server (a restart resumes where everyone was).
Then export for the next stages:</p>
<pre>aes collect export --out {out}
aes collect stats --out {out}</pre>
<p>or run notebook 01, which exports and aggregates the store; notebook 02 then reads the class's
critiques (<code>annotator_kind</code> <code>human</code>) with the rest.</p>
</body></html>"""


def lan_addresses() -> list[str]:
    """This machine's addresses other students can reach (best effort, nothing is contacted)."""
    found = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not ipaddress.ip_address(info[4][0]).is_loopback:
                found.add(info[4][0])
    except OSError:
        pass
    return sorted(found)


def _check_writable(db: Path) -> None:
    """Fail before serving when the store's folder or file cannot be written, saying why."""
    import errno
    import os
    import tempfile

    why = {errno.EROFS: "it is on a read-only disk", errno.EACCES: "no permission to write there",
           errno.EPERM: "no permission to write there", errno.ENOSPC: "the disk is full"}
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=db.parent, prefix=".write-test-"):
            pass
        if db.exists():
            with open(db, "r+b"):
                pass
    except OSError as e:
        reason = why.get(e.errno, e.strerror or str(e))
        raise OSError(f"{db}: the critique store cannot be written: {reason}; the class server needs a "
                      "writable store: give --out a folder on a writable disk") from None


def serve(data_dir: str | Path, out_dir: str | Path, host: str = "127.0.0.1", port: int = 8765,
          per_image: int = 3, join_code: str | None = None, teacher_code: str | None = None,
          protocol: str | Path = "default", lease_seconds: float = 300.0, flag_limit: int = 2) -> None:
    """Open the store (failing at once with a clear error when it cannot be written), print the
    addresses and codes, and serve until Ctrl+C."""
    import sqlite3

    import uvicorn

    from .pipeline import DB_NAME, critiques_dir, load_manifest, open_store

    for flag, code in (("--join-code", join_code), ("--teacher-code", teacher_code)):
        if code is not None and not re.fullmatch(r"[A-Za-z0-9_-]{6,64}", code):
            raise ValueError(f"{flag}: use 6-64 letters, digits, - or _ (got {code!r})")
    images = load_manifest(data_dir)
    proto = load_protocol(protocol)
    db = critiques_dir(out_dir) / DB_NAME
    _check_writable(db)
    try:
        store = open_store(out_dir)
        session = ClassSession(store, images, proto, per_image=per_image, lease_seconds=lease_seconds,
                               flag_limit=flag_limit)
    except (OSError, sqlite3.Error) as e:
        reason = " ".join(str(e).split())
        raise OSError(f"{db}: the critique store cannot be written ({reason}); the class server needs a "
                      "writable store: give --out a folder on a writable disk") from None
    code_needed = join_code is not None or not is_loopback(host)
    join = session.code("join_code", join_code) if code_needed else None
    tcode = session.code("teacher_code", teacher_code)
    shown = [host] if host not in ("0.0.0.0", "::") else (lan_addresses() or ["<this computer's address>"])
    lines = [f"class annotation server: {len(images)} images, {per_image} critiques per image, "
             f"store {db}", "students open:"]
    for h in shown:
        lines.append(f"  http://{h}:{port}/" + (f"?join={join}" if join else ""))
    if join:
        lines.append(f"join code: {join}")
    lines += [f"teacher's view: http://{shown[0]}:{port}/teacher?code={tcode}",
              f"stop: Ctrl+C, then `aes collect export --out {out_dir}` and `aes collect stats --out {out_dir}`"]
    for line in lines:
        log.info("%s", line)
    app = create_app(session, Path(data_dir), join, tcode, out_dir)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()
