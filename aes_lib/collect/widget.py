"""The annotation tool: an ipywidgets form that walks one annotator through the protocol.

Levels in order (grade, attributes, free text), each validated before moving on; submit, skip,
back and flag buttons; keyboard shortcuts (with the pointer over the image press the grade's key,
e.g. ``1``..``5``, or ``n`` = next, ``b`` = back, ``s`` = skip; the same keys typed in the *Keys*
box work without ipyevents); progress for the annotator and
overall. Every submit is committed to the SQLite store at once. Each annotator sees the images
they have not done yet in a stable per-annotator order, so reopening the notebook resumes.

The tool opened with :meth:`AnnotationTool.open` owns its store: it stays open as long as the
tool lives (closing other handles on the same file does not touch it) and :meth:`close` ends it.
An error inside any button, key or annotator callback is shown in red in the tool itself (and
logged), never only in a console the annotator cannot see.

It runs headlessly for tests: construct it, set widget values, call ``button.click()``.
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
import time
from pathlib import Path
from typing import Any, Callable

from aes_lib.images import display_bytes
from aes_lib.schema import Critique, ImageRecord

from .protocol import STEPS, Protocol, load_protocol
from .store import CritiqueStore, SubmitConflict, utc_now

log = logging.getLogger(__name__)


def plural(n: int, noun: str) -> str:
    """``n`` and the noun, in the plural unless ``n`` is 1: "1 annotator", "2 annotators"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def annotator_order(annotator: str, image_ids: list[str]) -> list[str]:
    """A stable, annotator-specific order of the images (so annotators do not all start alike)."""
    return sorted(image_ids, key=lambda i: hashlib.sha256(f"{annotator}\0{i}".encode()).hexdigest())


class AnnotationTool:
    """The widget; ``tool.widget`` is what the notebook displays."""

    @classmethod
    def open(cls, out_dir: str | Path, images: list[ImageRecord], image_root: str | Path, annotator: str,
             **kwargs) -> "AnnotationTool":
        """A tool with its own handle on ``<out_dir>/critiques/critiques.db``, closed by :meth:`close`."""
        from .pipeline import open_store

        store = open_store(out_dir)
        try:
            tool = cls(store, images, image_root, annotator, **kwargs)
        except BaseException:
            store.close()
            raise
        tool._owns_store = True
        return tool

    def __init__(self, store: CritiqueStore, images: list[ImageRecord], image_root: str | Path,
                 annotator: str, protocol: Protocol | None = None,
                 annotators: list[str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        import ipywidgets as w

        if not annotator.strip():
            raise ValueError("annotator: give a non-empty name")
        self.store, self.images = store, {im.id: im for im in images}
        self.image_root, self.protocol, self.clock = Path(image_root), protocol or load_protocol(), clock
        p = self.protocol
        self.annotator_box = w.Combobox(value=annotator, options=sorted(set(annotators or []) | {annotator}),
                                        description="Annotator", ensure_option=False,
                                        continuous_update=False)
        self.image = w.Image(format="png", layout=w.Layout(max_width="480px", max_height="400px"))
        self.caption = w.HTML()
        self.grade = w.ToggleButtons(options=[(f"{g.label} [{g.shortcut}]" if g.shortcut else g.label, g.key)
                                              for g in p.grades], value=None)
        self.shortcut = w.Text(placeholder="shortcuts: " + " ".join(
            f"{g.shortcut}={g.label}" for g in p.grades if g.shortcut) + " n=next b=back s=skip",
            description="Keys", continuous_update=True)
        self.ratings = {a.key: w.ToggleButtons(options=list(range(1, 6)), value=None,
                                               tooltips=[p.rating_labels.get(r, str(r)) for r in range(1, 6)],
                                               style={"button_width": "36px"})
                        for a in p.attributes}
        self.words = {a.key: w.Text(placeholder="one word" + ("" if a.word_required else " (optional)"),
                                    layout=w.Layout(width="160px")) for a in p.attributes}
        self.description = w.Textarea(placeholder=p.description.question,
                                      layout=w.Layout(width="100%", height="110px"))
        self.suggestion = w.Textarea(placeholder=p.suggestion.question,
                                     layout=w.Layout(width="100%", height="60px"))
        self.back_button = w.Button(description="Back", icon="arrow-left")
        self.next_button = w.Button(description="Next", icon="arrow-right", button_style="info")
        self.submit_button = w.Button(description="Submit", icon="check", button_style="success")
        self.skip_button = w.Button(description="Skip", icon="forward")
        self.flag_reason = w.Dropdown(options=p.flag_reasons, value=p.flag_reasons[0],
                                      layout=w.Layout(width="180px"))
        self.flag_button = w.Button(description="Flag", icon="flag", button_style="warning")
        self.message = w.HTML()
        self.progress = w.IntProgress(min=0, max=max(1, len(self.images)), description="You")
        self.progress_label = w.HTML()
        self.overall_label = w.HTML()
        self._steps = self._build_steps(w)
        self.step_area = w.VBox()
        self.widget = w.VBox([
            w.HBox([self.annotator_box, self.progress, self.progress_label]), self.overall_label,
            self.caption, self.image, self.step_area, self.message,
            w.HBox([self.back_button, self.next_button, self.submit_button, self.skip_button,
                    self.flag_reason, self.flag_button]),
        ])
        self._owns_store = False
        self.back_button.on_click(self._shown_errors(lambda _: self.back()))
        self.next_button.on_click(self._shown_errors(lambda _: self.next_step()))
        self.submit_button.on_click(self._shown_errors(lambda _: self.submit()))
        self.skip_button.on_click(self._shown_errors(lambda _: self.skip()))
        self.flag_button.on_click(self._shown_errors(lambda _: self.flag()))
        self.shortcut.observe(self._shown_errors(self._on_key), names="value")
        self.key_events = self._attach_key_events()
        self.annotator_box.observe(self._shown_errors(
            lambda ch: self.set_annotator(ch["new"]) if ch["new"].strip() else None), names="value")
        self.current: str | None = None
        self.step = 0
        self.history: list[str] = []
        self._spent_before = 0.0
        self.set_annotator(annotator)

    def _shown_errors(self, callback: Callable[..., Any]) -> Callable[..., None]:
        """Wrap a widget callback so that an exception becomes a red message in the tool.

        ipywidgets would otherwise send it to the kernel's log, which JupyterLab hides in its log
        console: the annotator would click Submit and see nothing happen."""
        @functools.wraps(callback)
        def guarded(*args, **kwargs) -> None:
            try:
                callback(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every error must reach the annotator
                log.exception("annotation tool: a callback failed")
                self._say([f"Error: {type(e).__name__}: {e}"], error=True)
        return guarded

    def close(self) -> None:
        """Close the tool's widgets, and its store when the tool opened it."""
        if self._owns_store:
            self.store.close()
            self._owns_store = False
        self.widget.close()

    def _build_steps(self, w) -> list:
        p = self.protocol
        rows = [w.HBox([w.HTML(f"<b>{html.escape(a.label)}</b>", layout=w.Layout(width="140px")),
                        self.ratings[a.key], self.words[a.key]],
                       layout=w.Layout(align_items="center")) for a in p.attributes]
        return [
            w.VBox([w.HTML(f"<h4>1. {html.escape(p.grade_question)}</h4>"), self.grade, self.shortcut]),
            w.VBox([w.HTML("<h4>2. Rate each attribute (1 = very poor, 5 = excellent)</h4>"), *rows]),
            w.VBox([w.HTML(f"<h4>3. {html.escape(p.description.question)}</h4>"), self.description,
                    w.HTML(html.escape(p.suggestion.question)), self.suggestion]),
        ]

    # --- state --------------------------------------------------------------------------------
    @property
    def annotator(self) -> str:
        return self.annotator_box.value.strip()

    def pending(self) -> list[str]:
        """Images this annotator still has to do, in their order; skipped ones come last."""
        done = self.store.done_image_ids(self.annotator)
        skipped = self.store.skipped_image_ids(self.annotator)
        order = [i for i in annotator_order(self.annotator, list(self.images)) if i not in done]
        return [i for i in order if i not in skipped] + [i for i in order if i in skipped]

    def set_annotator(self, name: str) -> None:
        if self.annotator_box.value != name:
            self.annotator_box.value = name  # triggers this method again through observe
            return
        self.history = []
        self._show(self._next_pending())

    def _next_pending(self, exclude: str | None = None) -> str | None:
        pending = self.pending()
        if exclude is not None and len(pending) > 1:
            pending = [i for i in pending if i != exclude]
        return pending[0] if pending else None

    def answers(self) -> dict:
        return {
            "grade": self.grade.value,
            "attributes": {k: {"rating": self.ratings[k].value,
                               "word": self.words[k].value.strip() or None} for k in self.ratings},
            "description": self.description.value.strip(),
            "suggestion": self.suggestion.value.strip(),
        }

    # --- actions ------------------------------------------------------------------------------
    def next_step(self) -> bool:
        if self.current is None:
            return False
        problems = self.protocol.validate_step(STEPS[self.step], self.answers())
        if problems:
            self._say(problems, error=True)
            return False
        self.message.value = ""   # the level is answered: its old warnings no longer apply
        if self.step < len(STEPS) - 1:
            self.step += 1
            self._render()
        return True

    def back(self) -> None:
        if self.step > 0:
            self.step -= 1
            self._render()
        elif self.history:
            self._show(self.history.pop(), prefill=True, remember=False)

    def _named(self) -> bool:
        """True when an annotator name is set; otherwise say so (nothing is recorded anonymously)."""
        if not self.annotator:
            self._say(["type your name in the annotator box first"], error=True)
        return bool(self.annotator)

    def submit(self) -> Critique | None:
        """Validate every level and commit the critique; returns it (``None`` when invalid)."""
        if self.current is None or not self._named():
            return None
        answers = self.answers()
        for i, step in enumerate(STEPS):
            problems = self.protocol.validate_step(step, answers)
            if problems:
                self.step = i
                self._render()
                self._say(problems, error=True)
                return None
        critique = Critique(
            id=f"{self.annotator}:{self.current}", image_id=self.current, annotator=self.annotator,
            annotator_kind="human", protocol_version=self.protocol.id, grade=answers["grade"],
            attributes={k: v for k, v in answers["attributes"].items() if v["rating"] is not None},
            description=answers["description"], suggestion=answers["suggestion"],
            seconds_spent=round(self._spent_before + self.clock() - self._started, 2),
            created_at=utc_now(), source="annotation-tool",
            extra={"image": self.images[self.current].file},
        )
        try:
            self.store.submit(critique, replaces=getattr(self, "_replaces", None))
        except SubmitConflict as e:
            self._say([str(e)], error=True)
            return None
        log.info("%s submitted %s", self.annotator, critique.id)
        self._advance()
        self._say([f"saved critique of {critique.image_id}"])
        return critique

    def skip(self) -> None:
        if self.current is not None and self._named():
            image = self.current
            self.store.record_event("skip", image, self.annotator, "", self.protocol.id)
            self._advance()
            self._say([f"skipped {image} (recorded; it comes back after the others)"])

    def flag(self) -> None:
        if self.current is not None and self._named():
            image, reason = self.current, self.flag_reason.value.strip()
            self.store.record_event("flag", image, self.annotator, self.flag_reason.value,
                                    self.protocol.id)
            self._advance()
            self._say([f"flagged {image}" + (f" ({reason})" if reason else "") + ": recorded"])

    def _on_key(self, change) -> None:
        key = (change["new"] or "")[-1:]
        if key:
            self.shortcut.value = ""
            self.press(key)

    def _attach_key_events(self):
        """Real key presses while the pointer is over the image (ipyevents), when installed."""
        try:
            from ipyevents import Event
        except ImportError:  # the Keys box still works
            return None
        events = Event(source=self.image, watched_events=["keydown"], prevent_default_action=True)
        events.on_dom_event(self._shown_errors(lambda event: self.press(event.get("key", ""))))
        return events

    def press(self, key: str) -> None:
        """One keyboard shortcut: a grade key on the first level, n = next, b = back, s = skip."""
        key = key.lower()
        grade = self.protocol.grade_for_shortcut(key)
        if grade is not None and self.step == 0:
            self.grade.value = grade
        elif key == "n":
            self.next_step()
        elif key == "b":
            self.back()
        elif key == "s":
            self.skip()

    # --- display ------------------------------------------------------------------------------
    def _advance(self) -> None:
        if self.current is not None:
            self.history.append(self.current)
        self._show(self._next_pending(exclude=self.current))

    def _show(self, image_id: str | None, prefill: bool = False, remember: bool = True) -> None:
        self.current, self.step, self._spent_before = image_id, 0, 0.0
        self._clear()
        if image_id is not None:
            record = self.images[image_id]
            path = self.image_root / record.file
            if path.is_file():
                self.image.value, self.image.format = display_bytes(path)   # as every stage sees it
                self.caption.value = f"<b>{html.escape(record.id)}</b> {html.escape(record.title)}"
            else:
                self.image.value = b""
                self.caption.value = (f"<b>{html.escape(record.id)}</b>: image file {html.escape(str(path))} "
                                      "is missing; flag it as broken")
            existing = self.store.get(f"{self.annotator}:{image_id}") if prefill else None
            self._replaces = existing   # a submit replaces only this (another window's is kept)
            if existing is not None:
                self._fill(existing)
        else:
            self.image.value = b""
            self.caption.value = f"<b>All done</b>: {html.escape(self.annotator)} has no images left."
        self._started = self.clock()
        self._render()

    def _clear(self) -> None:
        self.grade.value = None
        for k in self.ratings:
            self.ratings[k].value, self.words[k].value = None, ""
        self.description.value = self.suggestion.value = ""
        self.message.value = ""

    def _fill(self, c: Critique) -> None:
        self.grade.value = c.grade
        for k, j in c.attributes.items():
            if k in self.ratings:
                self.ratings[k].value, self.words[k].value = j["rating"], j.get("word") or ""
        self.description.value, self.suggestion.value = c.description, c.suggestion
        self._spent_before = c.seconds_spent

    def _render(self) -> None:
        active = self.current is not None
        self.step_area.children = [self._steps[self.step]] if active else []
        last = self.step == len(STEPS) - 1
        self.next_button.layout.display = "none" if last else None
        self.submit_button.layout.display = None if last else "none"
        for b in (self.next_button, self.submit_button, self.skip_button, self.flag_button):
            b.disabled = not active
        self.back_button.disabled = not (active and (self.step > 0 or self.history))
        done = len(self.store.done_image_ids(self.annotator) & set(self.images))
        self.progress.value = done
        self.progress_label.value = f"{done} / {len(self.images)} done, {len(self.images) - done} to do"
        humans = [(i, a) for i, a in self.store.pairs("human") if i in self.images]
        covered = len({i for i, _ in humans})
        n_people = len({a for _, a in humans})
        self.overall_label.value = (f"Overall: {plural(len(humans), 'human critique')} by "
                                    f"{plural(n_people, 'annotator')}; {covered} / "
                                    f"{len(self.images)} images have at least one")

    def _say(self, lines: list[str], error: bool = False) -> None:
        color = "#b00" if error else "#070"
        self.message.value = "".join(f"<div style='color:{color}'>{html.escape(s)}</div>" for s in lines)
