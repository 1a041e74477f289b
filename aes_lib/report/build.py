"""Build every figure and table the available inputs support, then the gallery.

``Report`` is what notebook 05 drives one figure at a time; ``build_report`` (and
``aes report``) does it all at once. A figure whose input file is missing is skipped with a
logged warning and a note in the gallery; nothing else is ever skipped.
"""

from __future__ import annotations

import base64
import html
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aes_lib.config import Config, require
from aes_lib.io import sha256_file, write_json
from aes_lib.report import figures as F
from aes_lib.report import tables as T
from aes_lib.report.gallery import write_gallery
from aes_lib.report.loaders import INPUT_FILES, Inputs, load_inputs
from aes_lib.report.reference import BENCH_COLUMNS, load_reference, reported_scores, source_label

log = logging.getLogger(__name__)

CAPTIONS_FILE = Path(__file__).resolve().parent.parent / "assets" / "report_captions.yaml"


@dataclass
class ReportConfig(Config):
    out_dir: str = field(default="outputs", metadata={"help": "pipeline output folder: read from, "
                                                              "figures/ tables/ index.* written to"})
    judge: str = field(default="", metadata={"help": "AesI judge whose scores to show (the name in "
                                                     "'overall[<judge>]'); '' = first in sorted order"})
    top_words: int = field(default=5, metadata={"help": "characteristic words shown per attribute"})
    loss_smoothing: float = field(default=0.9, metadata={"help": "EMA factor of the smoothed loss "
                                                                 "curve, in [0, 1)"})
    run_label: str = field(default="", metadata={"help": "how measured rows name this run, e.g. "
                                                         "'cpu profile, tiny LLaVA' ('' = no name)"})

    def check(self) -> None:
        require(bool(str(self.out_dir).strip()), "out_dir", "must not be empty")
        require(1 <= self.top_words <= 50, "top_words", "must be between 1 and 50")
        require(0.0 <= self.loss_smoothing < 1.0, "loss_smoothing", "must be in [0, 1)")


@dataclass
class Spec:
    kind: str                                # figure | table
    needs: tuple[str, ...]                   # input names (loaders.INPUT_FILES)
    make: Callable[["Report"], Any]          # -> matplotlib Figure or tables.Table


def _kind(rep: "Report") -> str:
    return (rep.inputs.critique_stats or {}).get("annotator_kind", "unknown")


def _consensus_counts(rep: "Report") -> dict[str, int] | None:
    df = rep.inputs.consensus
    return None if df is None else dict(Counter(df["consensus_grade"].dropna().astype(str)))


#: Runs in another answer form than AesBench's letter format (notebook 04's names for them).
OTHER_FORMS = ("-cloze", "-generate")


def letter_format_only(measured: dict[str, Any]) -> dict[str, Any]:
    """The runs answered in AesBench's letter format (and their controls): the radar beside
    AesBench's leaderboard shows only these; cloze and generate runs are in the bars and tables."""
    return {m: v for m, v in measured.items() if not m.split(":")[0].endswith(OTHER_FORMS)}


SPECS: dict[str, Spec] = {
    "fig_dataset_composition": Spec("figure", ("manifest",),
                                    lambda r: F.fig_dataset_composition(r.inputs.manifest)),
    "fig_critique_grades": Spec("figure", ("critique_stats",), lambda r: F.fig_critique_grades(
        r.inputs.critique_stats["grade_counts"], _kind(r), _consensus_counts(r))),
    "fig_attribute_ratings": Spec("figure", ("critique_stats",), lambda r: F.fig_attribute_ratings(
        r.inputs.critique_stats["attribute_ratings"], _kind(r))),
    "fig_description_lengths": Spec("figure", ("critique_stats",), lambda r: F.fig_description_lengths(
        r.inputs.critique_stats["description_lengths"], _kind(r))),
    "fig_characteristic_words": Spec("figure", ("critique_stats",), lambda r: F.fig_characteristic_words(
        r.inputs.critique_stats["characteristic_words"], _kind(r), r.cfg.top_words)),
    "fig_agreement": Spec("figure", ("critique_stats",), lambda r: F.fig_agreement(
        r.inputs.critique_stats["agreement"], _kind(r))),
    "fig_instruction_types": Spec("figure", ("instruction_stats",), lambda r: F.fig_instruction_types(
        r.inputs.instruction_stats["counts_by_type"], r.inputs.instruction_stats["counts_by_qtype"])),
    "fig_instruction_lengths": Spec("figure", ("instruction_stats",), lambda r: F.fig_instruction_lengths(
        r.inputs.instruction_stats["question_lengths"], r.inputs.instruction_stats["answer_lengths"])),
    "fig_loss_curve": Spec("figure", ("loss",), lambda r: F.fig_loss_curve(r.inputs.loss,
                                                                            r.cfg.loss_smoothing)),
    "fig_radar_aesbench": Spec("figure", (), lambda r: F.fig_radar_aesbench(
        reported_scores(r.ref), letter_format_only(r.measured()), BENCH_COLUMNS, r.reported_label, judge=r.judge,
        kinds="+".join(sorted(set("+".join(T.model_kinds(r.inputs.results).values()).split("+")) - {""}))
        if r.inputs.results is not None else "")),
    "fig_bars_attribute": Spec("figure", ("results",), lambda r: F.fig_bars(r.inputs.results,
                                                                            "attribute", r.judge)),
    "fig_bars_qtype": Spec("figure", ("results",), lambda r: F.fig_bars(r.inputs.results, "qtype",
                                                                        r.judge)),
    "fig_bars_source": Spec("figure", ("results",), lambda r: F.fig_bars(r.inputs.results, "source",
                                                                         r.judge)),
    "table_main_results": Spec("table", (), lambda r: T.table_main_results(
        r.ref, r.measured(intervals=True), r.run_label, r.judge, T.model_kinds(r.inputs.results)
        if r.inputs.results is not None else None, r.repeated_answers(), r.photo_sets())),
    "table_dataset_stats": Spec("table", (), lambda r: T.table_dataset_stats(
        r.ref, r.inputs.manifest, r.inputs.critique_stats, r.inputs.instruction_stats)),
}


class Shown:
    """What a notebook cell shows for one built (or skipped) item: image or table, caption."""

    def __init__(self, name: str, caption: str, png: Path | None = None, table: Any = None,
                 skipped: str = ""):
        self.name, self.caption, self.png, self.table, self.skipped = name, caption, png, table, skipped

    def _repr_html_(self) -> str:
        if self.skipped:
            return f"<p><strong>{html.escape(self.name)} skipped</strong>: {html.escape(self.skipped)}</p>"
        body = ""
        if self.png is not None:
            data = base64.b64encode(self.png.read_bytes()).decode("ascii")
            body = f'<img src="data:image/png;base64,{data}" style="max-width:100%">'
        if self.table is not None:
            from aes_lib.report.gallery import table_html

            body = table_html(self.table.columns, self.table.rows)
        return f"{body}<p><em>{html.escape(self.name)}</em>. {html.escape(self.caption)}</p>"

    def __repr__(self) -> str:
        return f"{self.name}: skipped ({self.skipped})" if self.skipped else f"{self.name}: {self.caption}"


class Report:
    """Builds the report's items from the files under ``cfg.out_dir``."""

    def __init__(self, cfg: ReportConfig, inputs: Inputs | None = None):
        import yaml

        self.cfg = cfg
        self.out_dir = Path(cfg.out_dir)
        self.inputs = inputs if inputs is not None else load_inputs(self.out_dir)
        self.ref = load_reference()
        self.captions = yaml.safe_load(CAPTIONS_FILE.read_text(encoding="utf-8"))
        self.reported_label = source_label(self.ref, self.ref["benchmark"]["source"])
        self.run_label = cfg.run_label
        self.judge = self._pick_judge()
        self.built: dict[str, dict[str, Any]] = {}     # name -> {kind, caption, files, ...}
        self.skipped: dict[str, str] = {}

    def _pick_judge(self) -> str:
        if self.inputs.results is None:
            return self.cfg.judge
        available = T.judges(self.inputs.results)
        if self.cfg.judge and self.cfg.judge not in available:
            raise ValueError(f"judge {self.cfg.judge!r}: not in {self.out_dir / INPUT_FILES['results']} "
                             f"(AesI judges there: {', '.join(available) or 'none'})")
        return self.cfg.judge or (available[0] if available else "")

    def measured(self, intervals: bool = False) -> dict[str, dict[str, Any]]:
        return {} if self.inputs.results is None else T.measured_scores(self.inputs.results, self.judge,
                                                                          intervals)

    def model_results(self) -> dict[str, dict[str, Any]]:
        """``{model: eval/results_<model>.json}`` of the evaluated models."""
        import json

        out = {}
        for path in sorted((self.out_dir / "eval").glob("results_*.json")):
            try:
                res = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ValueError(f"{path}: not JSON ({e})") from None
            out[str(res.get("model", path.stem[8:]))] = res
        return out

    def repeated_answers(self) -> dict[str, list[dict[str, Any]]]:
        """``{model: flags}`` (answers identical across items) from the models' results files."""
        return {m: res["repeated_answers"] for m, res in self.model_results().items()
                if res.get("repeated_answers")}

    def photo_sets(self) -> dict[str, str]:
        """``{model: photo set}`` each model was measured on (only the project's own benchmark
        records one; models scored on AesBench files or score datasets have none)."""
        return {m: str(res.get("photo_set") or "") for m, res in self.model_results().items()}

    def caption(self, name: str) -> str:
        spec = SPECS[name]
        text = self.captions["figures" if spec.kind == "figure" else "tables"][name]
        return " ".join(text.format(annotator_kind=_kind(self), judge=self.judge or "none",
                                    reported_label=self.reported_label, top_k=self.cfg.top_words).split())

    def build(self, name: str) -> Shown:
        """Build one figure or table (or record why it is skipped) and return what to show."""
        if name not in SPECS:
            raise ValueError(f"unknown report item {name!r} (known: {', '.join(SPECS)})")
        spec = SPECS[name]
        missing = [INPUT_FILES[n] for n in spec.needs if not self.inputs.has(n)]
        if missing:
            reason = "needs " + ", ".join(missing) + " under the output folder (not found)"
            log.warning("%s skipped: %s", name, reason)
            self.skipped[name] = reason
            self.built.pop(name, None)
            return Shown(name, "", skipped=reason)
        caption = self.caption(name)
        obj = spec.make(self)
        if spec.kind == "figure":
            paths = F.save_figure(obj, self.out_dir / "figures", name)
            self.built[name] = {"kind": "figure", "caption": caption, "paths": paths}
            log.info("wrote %s", ", ".join(str(p) for p in paths))
            return Shown(name, caption, png=paths[1])
        paths = T.write_table(obj, self.out_dir / "tables", name)
        obj.caption = obj.caption or caption
        self.built[name] = {"kind": "table", "caption": caption, "paths": paths, "table": obj}
        log.info("wrote %s", ", ".join(str(p) for p in paths))
        return Shown(name, caption, table=obj)

    def summary(self) -> dict[str, Any]:
        """What ``report.json`` holds and the gallery shows: every item, its files and hashes."""
        def rel(p: Path) -> str:
            return p.relative_to(self.out_dir).as_posix()

        out: dict[str, Any] = {"config": self.cfg.to_dict(), "judge": self.judge,
                               "inputs": self.inputs.summary(), "figures": {}, "tables": {},
                               "skipped": {n: self.skipped[n] for n in SPECS if n in self.skipped}}
        for name in SPECS:
            item = self.built.get(name)
            if item is None:
                continue
            entry = {"caption": item["caption"], "files": [rel(p) for p in item["paths"]],
                     "sha256": {rel(p): sha256_file(p) for p in item["paths"]}}
            if item["kind"] == "table":
                t = item["table"]
                entry.update(columns=t.columns, rows=t.rows, notes=t.notes)
            out["figures" if item["kind"] == "figure" else "tables"][name] = entry
        out["other_figures"] = self._other_figures(rel)
        return out

    def _other_figures(self, rel) -> dict[str, Any]:
        """Figures earlier notebooks saved under ``figures/`` (e.g. the contact sheet)."""
        others: dict[str, Any] = {}
        for png in sorted((self.out_dir / "figures").glob("*.png")):
            if png.stem in SPECS:
                continue
            paths = [p for p in (png.with_suffix(".pdf"), png) if p.exists()]
            caption = self.captions.get("other_figures", {}).get(png.stem) or (
                "A figure an earlier notebook saved under figures/; its executed copy (below) explains it.")
            others[png.stem] = {"caption": " ".join(caption.split()),
                                "files": [rel(p) for p in paths],
                                "sha256": {rel(p): sha256_file(p) for p in paths}}
        return others

    def finish(self) -> list[Path]:
        """Build whatever was not built yet, drop stale files of skipped items, write
        ``report.json``, ``index.html`` and ``index.md``; return every file written."""
        for name in SPECS:
            if name not in self.built and name not in self.skipped:
                self.build(name)
        for name in self.skipped:
            folder, exts = (("figures", F.FIGURE_FORMATS) if SPECS[name].kind == "figure"
                            else ("tables", T.TABLE_FORMATS))
            for ext in exts:
                (self.out_dir / folder / f"{name}.{ext}").unlink(missing_ok=True)
        summary = self.summary()
        written = [p for item in self.built.values() for p in item["paths"]]
        written.append(write_json(self.out_dir / "report.json", summary))
        written += write_gallery(self.out_dir, summary)
        return written


def build_report(cfg: ReportConfig) -> Report:
    """Build every figure and table the inputs support, then ``report.json`` and the gallery."""
    rep = Report(cfg)
    rep.finish()
    return rep


def _cli(args) -> int:
    cfg = ReportConfig.from_dict({"out_dir": args.out, "judge": args.judge,
                                  "top_words": args.top_words})
    rep = build_report(cfg)
    log.info("report: %d figures, %d tables, %d skipped; gallery %s",
             sum(1 for i in rep.built.values() if i["kind"] == "figure"),
             sum(1 for i in rep.built.values() if i["kind"] == "table"), len(rep.skipped),
             Path(cfg.out_dir) / "index.html")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("report", help="figures, tables and the HTML gallery (notebook 05)",
                              description="Build every figure and table the files under --out "
                                          "support; skip (with a note) what lacks its input.")
    p.add_argument("--out", default="outputs", help="pipeline output folder (default: outputs)")
    p.add_argument("--judge", default="", help="AesI judge to show (default: first available)")
    p.add_argument("--top-words", type=int, default=5, help="characteristic words per attribute")
    p.set_defaults(func=_cli)
