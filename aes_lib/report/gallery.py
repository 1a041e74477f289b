"""The browsable gallery: ``index.html`` and its Markdown twin ``index.md`` under ``out_dir``.

Both list every figure with its caption and every table, note what was skipped and why, and
link the executed notebooks the runner wrote (``notebooks/*.ipynb``). All links are relative
to ``out_dir`` and point at files that exist when the gallery is written.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Any, Mapping, Sequence

from aes_lib.io import atomic_write_text

TEMPLATE = Path(__file__).resolve().parent.parent / "assets" / "report_gallery.html"
TITLE = "AesExpert Companion: figures and tables"
#: The pipeline's notebooks, in order, as the runner names their executed copies.
NOTEBOOKS = ("00_dataset", "01_collect", "02_generate", "03_finetune", "04_evaluate", "05_figures")

INTRO = ("Every number on this page is labelled: <em>reported by &lt;source&gt;</em> is copied from "
         "a paper or benchmark; <em>measured by this run</em> was computed by this pipeline. "
         "Simulated annotators are labelled <em>simulated</em>.")


def _notebook_entries(out_dir: Path) -> list[tuple[str, str | None]]:
    """``(name, relative link or None)`` for each pipeline notebook and any other executed one."""
    found = {p.stem: p.relative_to(out_dir).as_posix()
             for p in sorted((out_dir / "notebooks").glob("*.ipynb"))}
    names = list(NOTEBOOKS) + sorted(set(found) - set(NOTEBOOKS))
    return [(n, found.get(n)) for n in names]


def table_html(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from aes_lib.report.tables import Table

    align = ['class="num"' if num else 'class="text"'
             for num in Table(list(columns), [list(r) for r in rows]).numeric()]
    head = "".join(f"<th {a}>{html.escape(c)}</th>" for a, c in zip(align, columns))
    body = []
    for row in rows:
        cls = f' class="{row[0]}"' if columns and columns[0] == "kind" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td {a}>{html.escape(str(c))}</td>"
                                           for a, c in zip(align, row)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _links_html(files: Sequence[str]) -> str:
    return " · ".join(f'<a href="{html.escape(f)}">{html.escape(Path(f).suffix[1:].upper())}</a>'
                      for f in files)


def _image_html(png: str, name: str) -> str:
    """The figure, shrunk to the page; a click opens it at full size (wide figures need it)."""
    return (f'<a href="{html.escape(png)}" title="open at full size"><img src="{html.escape(png)}" '
            f'alt="{html.escape(name)}"></a>')


def render_html(out_dir: Path, report: Mapping[str, Any]) -> str:
    parts = [f"<h1>{html.escape(TITLE)}</h1>", f"<p>{INTRO}</p>"]
    names = list(report.get("figures", {})) + list(report.get("tables", {}))
    if names:
        parts.append('<p class="legend-key">Contents: ' + " · ".join(
            f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in names) + "</p>")
    if report.get("skipped"):
        parts.append("<h2>Skipped</h2>")
        parts += [f'<p class="note"><strong>{html.escape(n)}</strong>: {html.escape(r)}</p>'
                  for n, r in report["skipped"].items()]
    parts.append("<h2>Figures</h2>")
    for name, fig in report.get("figures", {}).items():
        png = next(f for f in fig["files"] if f.endswith(".png"))
        parts.append(f'<figure id="{html.escape(name)}">{_image_html(png, name)}<figcaption><strong>'
                     f'{html.escape(name)}</strong>. {html.escape(fig["caption"])} <span class="files">'
                     f'{_links_html(fig["files"])}</span></figcaption></figure>')
    if report.get("other_figures"):
        parts.append("<h2>Figures from earlier notebooks</h2>")
        for name, fig in report["other_figures"].items():
            png = next(f for f in fig["files"] if f.endswith(".png"))
            parts.append(f'<figure id="{html.escape(name)}">{_image_html(png, name)}<figcaption><strong>'
                         f'{html.escape(name)}</strong>. {html.escape(fig["caption"])} <span class="files">'
                         f'{_links_html(fig["files"])}</span></figcaption></figure>')
    parts.append("<h2>Tables</h2>")
    for name, tab in report.get("tables", {}).items():
        parts.append(f'<h3 id="{html.escape(name)}">{html.escape(name)}</h3>'
                     f"<p>{html.escape(tab['caption'])}</p>" + table_html(tab["columns"], tab["rows"])
                     + "".join(f"<p><em>{html.escape(n)}</em></p>" for n in tab.get("notes", []))
                     + f'<p class="files">{_links_html(tab["files"])}</p>')
    parts.append("<h2>Executed notebooks</h2><ul>")
    for name, link in _notebook_entries(out_dir):
        parts.append(f'<li><a href="{html.escape(link)}">{html.escape(name)}</a></li>' if link
                     else f"<li>{html.escape(name)}: not executed in this output folder yet</li>")
    parts.append("</ul>")
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=html.escape(TITLE), body="\n".join(parts))


def render_markdown(out_dir: Path, report: Mapping[str, Any]) -> str:
    from aes_lib.report.tables import Table

    lines = [f"# {TITLE}", "", INTRO.replace("<em>", "*").replace("</em>", "*")
             .replace("&lt;", "<").replace("&gt;", ">"), ""]
    if report.get("skipped"):
        lines += ["## Skipped", ""] + [f"- **{n}**: {r}" for n, r in report["skipped"].items()] + [""]
    lines += ["## Figures", ""]
    for name, fig in report.get("figures", {}).items():
        png = next(f for f in fig["files"] if f.endswith(".png"))
        links = " · ".join(f"[{Path(f).suffix[1:].upper()}]({f})" for f in fig["files"])
        lines += [f"### {name}", "", f"![{name}]({png})", "", f"{fig['caption']} ({links})", ""]
    if report.get("other_figures"):
        lines += ["## Figures from earlier notebooks", ""]
        for name, fig in report["other_figures"].items():
            png = next(f for f in fig["files"] if f.endswith(".png"))
            links = " · ".join(f"[{Path(f).suffix[1:].upper()}]({f})" for f in fig["files"])
            lines += [f"### {name}", "", f"![{name}]({png})", "", f"{fig['caption']} ({links})", ""]
    lines += ["## Tables", ""]
    for name, tab in report.get("tables", {}).items():
        links = " · ".join(f"[{Path(f).suffix[1:].upper()}]({f})" for f in tab["files"])
        md = Table(tab["columns"], tab["rows"], notes=tab.get("notes", [])).to_markdown()
        lines += [f"### {name}", "", tab["caption"], "", md, f"Files: {links}", ""]
    lines += ["## Executed notebooks", ""]
    for name, link in _notebook_entries(out_dir):
        lines.append(f"- [{name}]({link})" if link else f"- {name}: not executed in this output folder yet")
    return "\n".join(lines) + "\n"


def write_gallery(out_dir: str | Path, report: Mapping[str, Any]) -> list[Path]:
    """Write ``index.html`` and ``index.md`` under ``out_dir`` from a report summary."""
    out_dir = Path(out_dir)
    return [atomic_write_text(out_dir / "index.html", render_html(out_dir, report)),
            atomic_write_text(out_dir / "index.md", render_markdown(out_dir, report))]


def gallery_links(path: str | Path) -> list[str]:
    """Every ``href``/``src`` (HTML) or ``](link)`` (Markdown) target in a gallery file."""
    import re

    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".html"):
        return [html.unescape(m) for m in re.findall(r'(?:href|src)="([^"]+)"', text)]
    return re.findall(r"\]\(([^)\s]+)\)", text)


def broken_links(path: str | Path) -> list[str]:
    """Local link targets of a gallery file that do not exist (external links are ignored)."""
    base = Path(path).parent
    return [link for link in gallery_links(path)
            if "://" not in link and not link.startswith("#") and not (base / link).exists()]
