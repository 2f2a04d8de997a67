"""The report as one self-contained HTML page, for the Kubeflow UI's HTML viewer.

The UI (``HTMLViewer.tsx`` in kubeflow/pipelines) puts the file's text into an iframe's
``srcdoc`` with ``sandbox="allow-scripts"``: no same origin, so nothing relative resolves. The
page therefore carries everything: CSS in a ``<style>`` element, pictures as ``data:`` URIs, no
script, no font, link or request to any other address. Everything taken from the run is
HTML-escaped. For a 100-class dataset it stays well under 2 MB (``tests/test_report.py`` checks).
"""

from __future__ import annotations

import base64
from html import escape

from components.report.content import Report, Row, ScoreRow

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212121; margin: 16px 20px; }
h1 { font-size: 20px; margin: 0 0 6px; padding: 10px 14px; border-radius: 6px; }
h1.promoted { background: #e6f4ea; border-left: 6px solid #1e8e3e; }
h1.refused { background: #fce8e6; border-left: 6px solid #d93025; }
h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 1px solid #e0e0e0; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; max-width: 70em; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #e0e0e0; padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.better { color: #1e8e3e; } td.worse { color: #d93025; font-weight: 600; } td.unchanged { color: #757575; }
tr.changed td { background: #fff8e1; }
td.long { overflow-wrap: anywhere; max-width: 44em; }
figure { margin: 10px 0 18px; } figcaption { color: #555; max-width: 70em; }
img.picture { max-width: 100%; height: auto; border: 1px solid #eee; }
.strip { display: flex; flex-wrap: wrap; gap: 12px; }
.strip figure { width: 150px; margin: 0; font-size: 12px; }
.strip img { display: block; max-width: 140px; max-height: 140px; image-rendering: pixelated; border: 1px solid #ddd; }
.strip .path { color: #757575; overflow-wrap: anywhere; }
.missing { width: 128px; height: 64px; background: #f5f5f5; color: #757575; font-size: 11px; padding: 4px; }
"""


def e(text: object) -> str:
    return escape(str(text), quote=True)


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def table(header: list[str], rows: list[str]) -> str:
    head = f"<thead><tr>{''.join(f'<th>{e(h)}</th>' for h in header)}</tr></thead>" if any(header) else ""
    return f"<table>{head}<tbody>{''.join(rows)}</tbody></table>"


def _scores(rows: list[ScoreRow], compared: bool, first: str) -> str:
    numbered = bool(rows) and rows[0].index is not None
    header = (["#"] if numbered else []) + [first, "candidate"] + (["baseline", "change"] if compared else [])
    body = []
    for r in rows:
        cells = [f'<td class="number">{r.index}</td>'] if numbered else []
        cells += [f"<td>{e(r.name)}</td>", f'<td class="number">{r.candidate:.4f}</td>']
        if compared:
            cells += [
                f'<td class="number">{r.baseline:.4f}</td>',
                f'<td class="{r.direction}">{e(r.change_text())}</td>',
            ]
        body.append(f"<tr{' class=changed' if r.changed else ''}>{''.join(cells)}</tr>")
    return table(header, body)


def _rows(rows: list[Row], first: str) -> str:
    compared = any(r.baseline is not None for r in rows)
    header = [first, "candidate"] + (["baseline"] if compared else [])
    body = []
    for r in rows:
        cells = [f"<td>{e(r.name)}</td>", f'<td class="long">{e(r.candidate)}</td>']
        if compared:
            cells.append(f'<td class="long">{e(r.baseline)}</td>')
        body.append(f"<tr{' class=changed' if r.changed else ''}>{''.join(cells)}</tr>")
    return table(header, body)


def render_html(report: Report) -> str:
    compared = report.has_baseline
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report.decision)}: {e(report.reason)}</title><style>{STYLE}</style></head><body>",
        f'<h1 class="{"promoted" if report.promote else "refused"}">{e(report.decision)}: {e(report.reason)}</h1>',
        f"<p>{e(report.compared_with)}</p>",
    ]
    if report.classes_note:
        parts.append(f"<p>{e(report.classes_note)}</p>")
    parts.append(f"<h2>{'Scores against the baseline' if compared else 'Scores'}</h2>")
    if compared:
        parts.append("<p>Changed scores first, the largest change first.</p>")
    parts.append(_scores(report.overall, compared, "score"))
    parts += ["<h3>Recall per class</h3>", _scores(report.per_class, compared, "class")]
    parts += [
        "<h2>What changed in the inputs</h2>",
        "<h3>Training parameters</h3>",
        f"<p>{e(report.parameters_note)}</p>",
    ]
    if report.parameters:
        parts.append(_rows(report.parameters, "parameter"))
    parts += ["<h3>Dataset</h3>", _rows(report.dataset, "")]
    parts += ["<h2>Pictures</h2>"]
    for picture in report.pictures:
        parts.append(
            f'<h3>{e(picture.title)}</h3><figure><img class="picture" alt="{e(picture.description)}" '
            f'src="{data_uri(picture.mime, picture.data)}"><figcaption>{e(picture.description)}</figcaption></figure>'
        )
    parts += ["<h3>Worst-classified test images</h3>", f"<p>{e(report.worst_note)}</p>"]
    if report.worst:
        figures = []
        for worst in report.worst:
            p = worst.prediction
            if worst.picture is None:
                shown = f'<div class="missing">no picture: {e(worst.problem)}</div>'
            else:
                alt = f"true {p.true_class}, predicted {p.predicted_class}"
                shown = f'<img alt="{e(alt)}" src="{data_uri(worst.mime, worst.picture)}">'
            figures.append(
                f"<figure>{shown}<figcaption><b>true</b> {e(p.true_class)}<br><b>predicted</b> {e(p.predicted_class)}"
                f" ({p.probability:.2f})<br>p(true class) {p.true_class_probability:.2g}<br>"
                f'<span class="path">{e(p.path)}</span></figcaption></figure>'
            )
        parts.append(f'<div class="strip">{"".join(figures)}</div>')
    parts += ["<h2>Lineage</h2>", table(["", ""], [
        f'<tr><td>{e(r.name)}</td><td class="long">{e(r.candidate)}</td></tr>' for r in report.lineage
    ])]  # fmt: skip
    parts.append("</body></html>\n")
    return "".join(parts)
