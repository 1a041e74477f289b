"""Tables as lists of string rows, written as CSV, Markdown and LaTeX (booktabs).

Cells are formatted here, once, so the three files agree and are byte-identical run to run.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from aes_lib.io import atomic_write_text
from aes_lib.report.reference import BENCH_COLUMNS, reported_scores, source_detail, source_label
from aes_lib.schema import INSTRUCTION_TYPES

TABLE_FORMATS = ("csv", "md", "tex")
MEASURED = "measured by this run"
NA = "n/a"


@dataclass
class Table:
    """A titled table of strings; ``notes`` are printed under it."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(map(esc, self.columns)) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(map(esc, row)) + " |" for row in self.rows]
        for note in self.notes:
            lines += ["", f"*{note}*"]
        return "\n".join(lines) + "\n"

    def numeric(self) -> list[bool]:
        """Per column: every cell a number (or n/a), so it is right-aligned."""
        return [bool(self.rows) and all(_is_number(row[i]) for row in self.rows)
                for i in range(len(self.columns))]

    def to_latex(self) -> str:
        spec = "".join("r" if num else "l" for num in self.numeric())
        lines = [r"\begin{table}[t]", r"\centering", r"\small"]
        if self.caption:
            lines.append(r"\caption{" + latex_escape(self.caption) + "}")
        lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
                  " & ".join(latex_escape(c) for c in self.columns) + r" \\", r"\midrule"]
        kinds = [row[0] for row in self.rows]
        for i, row in enumerate(self.rows):
            if i and self.columns[0] == "kind" and kinds[i] != kinds[i - 1]:
                lines.append(r"\midrule")
            lines.append(" & ".join(latex_escape(c) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        for note in self.notes:
            lines.append(r"\par\footnotesize " + latex_escape(note))
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"


def _is_number(cell: str) -> bool:
    if cell == NA:
        return True
    cell = str(cell).split(" [", 1)[0]   # "70.00 [60.00, 80.00]": a value with its interval
    try:
        float(str(cell).replace(",", ""))
    except ValueError:
        return False
    return True


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def write_table(table: Table, folder: str | Path, name: str) -> list[Path]:
    """Write ``<folder>/<name>.csv``, ``.md`` and ``.tex``; return the paths."""
    folder = Path(folder)
    return [atomic_write_text(folder / f"{name}.csv", table.to_csv()),
            atomic_write_text(folder / f"{name}.md", table.to_markdown()),
            atomic_write_text(folder / f"{name}.tex", table.to_latex())]


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return f"{float(value):.{digits}f}"


def _digits(key: str) -> int:
    return 2 if BENCH_COLUMNS[key][1] == 100 else 3


def measured_scores(results, judge: str = "", intervals: bool = False) -> dict[str, dict[str, Any]]:
    """``{model: {column: value}}`` from ``eval/results.csv`` rows with ``group_by == "all"``,
    on the reference file's scales (accuracy in %, AesI 0-2 from ``judge``). Models with no
    benchmark row (e.g. only score-correlation rows) are left out. With ``intervals``, each
    value is ``(value, ci_low, ci_high)`` instead."""
    from aes_lib.report.loaders import split_metric

    out: dict[str, dict[str, Any]] = {}
    for row in results[results["group_by"] == "all"].itertuples(index=False):
        base, row_judge = split_metric(row.metric)
        if base == "accuracy" and row.dimension in ("AesP", "AesE", "AesA"):
            key, scale = row.dimension, 100.0
        elif row.dimension == "AesI" and row_judge == judge and f"AesI_{base}" in BENCH_COLUMNS:
            key, scale = f"AesI_{base}", 1.0
        else:
            continue
        value = float(row.value) * scale
        out.setdefault(row.model, {})[key] = ((value, float(row.ci_low) * scale, float(row.ci_high) * scale)
                                              if intervals else value)
    return out


def model_kinds(results) -> dict[str, str]:
    """``{model: "simulated"}``: the critique kinds behind each model's results (the
    ``annotator_kind`` column of ``eval/results.csv``; ``""`` where none or no such column)."""
    if "annotator_kind" not in results.columns:
        return {}
    out: dict[str, set[str]] = {}
    for model, kinds in zip(results["model"], results["annotator_kind"]):
        if isinstance(kinds, str) and kinds:
            out.setdefault(model, set()).update(kinds.split("+"))
    return {m: "+".join(sorted(k)) for m, k in out.items()}


def _with_ci(cell: Any, digits: int) -> str:
    if not isinstance(cell, tuple):
        return _fmt(cell, digits)
    value, lo, hi = cell
    if math.isnan(lo) or math.isnan(hi):
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def judges(results) -> list[str]:
    """The AesI judges present in ``results``, sorted."""
    from aes_lib.report.loaders import split_metric

    return sorted({split_metric(m)[1] for m, d in zip(results["metric"], results["dimension"])
                   if d == "AesI"} - {""})


def table_main_results(ref: Mapping[str, Any], measured: Mapping[str, Mapping[str, Any]] | None,
                       run_label: str = "", judge: str = "", kinds: Mapping[str, str] | None = None,
                       repeated: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                       photo_set: str | Mapping[str, str] = "") -> Table:
    """Reported rows (with their source) above measured rows (with their run), then the
    controls (blind answer prior, shuffled images). Measured values may be ``(value, low,
    high)`` tuples (:func:`measured_scores` with ``intervals``): they print as ``v [low, high]``.
    ``photo_set`` names the AesMMIT-mini photo set (e.g. ``full-69``) the measured rows were run
    on: one name for all, or ``{model: name}`` as each model's results file records it (empty for
    models scored on another benchmark)."""
    from aes_lib.evaluate.controls import CONTROL_NOTES, control_kind

    columns = ["kind", "model", "source"] + [BENCH_COLUMNS[k][0] for k in BENCH_COLUMNS]
    src = ref["benchmark"]["source"]
    rows = [["reported", model, source_detail(ref, src)]
            + [_fmt(scores.get(k), _digits(k)) for k in BENCH_COLUMNS]
            for model, scores in reported_scores(ref).items()]
    measured = measured or {}
    sets = dict(photo_set) if isinstance(photo_set, Mapping) else {m: photo_set for m in measured}
    ordered = sorted(measured, key=lambda m: bool(control_kind(m)))   # models first, then controls
    for model in ordered:
        scores = measured[model]
        has_aesi = judge and any(k.startswith("AesI") for k in scores)
        truth = (kinds or {}).get(model, "")
        detail = "; ".join(d for d in (run_label, f"photo set {sets[model]}" if sets.get(model) else "",
                                       f"AesI judge: {judge}" if has_aesi else "",
                                       f"answers and references partly from {truth} critiques" if truth else "")
                           if d)
        kind = control_kind(model)
        rows.append(["control" if kind else "measured", model,
                     MEASURED + (f" ({detail})" if detail else "") + (f"; {CONTROL_NOTES[kind]}" if kind else "")]
                    + [_with_ci(scores.get(k), _digits(k)) for k in BENCH_COLUMNS])
    notes = ["AesP, AesE, AesA: accuracy (%); AesI: 0-2 scores."]
    if measured:
        notes.append("Measured rows come from this project's benchmark, not AesBench; the two are "
                     "not directly comparable." + (f" AesI judged by {judge}" + (
                         " (an offline proxy that scores content against the reference critique, "
                         "not a GPT judge)." if judge.startswith("proxy") else ".") if judge else ""))
        named = sorted({sets[m] for m in measured if sets.get(m)})
        if named:
            notes.append(f"Measured on AesMMIT-mini photo set {' and '.join(named)}: never compare with "
                         "numbers from another photo set" + (" (this table mixes photo sets: compare "
                                                             "rows of one set only)." if len(named) > 1 else "."))
        if any(isinstance(v, tuple) for s in measured.values() for v in s.values()):
            notes.append("Measured cells: value [95% bootstrap confidence interval over items].")
        for model, flags in sorted((repeated or {}).items()):
            for f in flags:
                if model in measured:
                    notes.append(f"{model}: the same {f['dimension']} answer for {f['count']} of "
                                 f"{f['of']} items (\"{f['response'][:60]}\"): not an interpretation of "
                                 "the images, whatever the judge scores.")
        if any(control_kind(m) for m in measured):
            notes.append("Controls: a model shows it uses the image only where it beats both the "
                         "blind answer prior and its own shuffled-image control.")
    else:
        notes.append("No measured rows: eval/results.csv was not found.")
    return Table(columns, rows, "Main results: reported by AesBench vs " + MEASURED, notes)


def _mean(values: Sequence[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def table_dataset_stats(ref: Mapping[str, Any], images: Sequence[Mapping[str, Any]] | None,
                        critique_stats: Mapping[str, Any] | None,
                        instruction_stats: Mapping[str, Any] | None) -> Table:
    """AesMMIT's statistics as reported beside AesMMIT-mini's as measured (n/a where absent)."""
    ds = ref.get("dataset", {})
    rep = ds.get("values", {})
    rep_label = source_label(ref, ds["source"]) if ds else "reported"
    rows: list[list[str]] = []

    def add(stat: str, reported: Any, measured: Any) -> None:
        cells = [NA if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in (reported, measured)]
        rows.append([stat, *cells])

    add("images", rep.get("images"), len(images) if images is not None else None)
    add("source photos", None, len({im["source_photo"] for im in images}) if images is not None else None)
    cs = critique_stats or {}
    kind = cs.get("annotator_kind", "")
    add("critiques (feedbacks)", f"{rep['human_feedbacks']} (human)" if "human_feedbacks" in rep else None,
        f"{cs['n_critiques']:,} ({kind or 'unknown'})" if critique_stats else None)
    add("annotators", None, f"{cs['n_annotators']} ({kind})" if critique_stats else None)
    lengths = cs.get("description_lengths") or []
    add("avg. description length (words)", None, _fmt(_mean(lengths), 1) if lengths else None)
    ist = instruction_stats or {}
    by_type = ist.get("counts_by_type") or {}
    add("instructions", rep.get("instructions"), sum(by_type.values()) if instruction_stats else None)
    for t in [t for t in INSTRUCTION_TYPES if t in by_type] + sorted(set(by_type) - set(INSTRUCTION_TYPES)):
        add(f"instructions: {t}", None, by_type[t])
    for what in ("question", "answer"):
        per_type = ist.get(f"{what}_lengths") or {}
        allv = [v for t in sorted(per_type) for v in per_type[t]]
        add(f"avg. {what} length (words)", None, _fmt(_mean(allv), 1) if allv else None)
    notes = [f"AesMMIT column: {source_detail(ref, ds['source'])}."
             if ds else "", "AesMMIT-mini column: " + MEASURED + "."]
    if ds.get("not_reported"):
        notes.append("n/a in the AesMMIT column: " + ds["not_reported"] + ".")
    return Table(["statistic", f"AesMMIT ({rep_label})", f"AesMMIT-mini ({MEASURED})"], rows,
                 "Dataset statistics", [n for n in notes if n])
