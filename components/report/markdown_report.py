"""The report as Markdown, for the Kubeflow UI's Markdown viewer and for a pull-request comment.

What the UI does with it (``frontend/src/components/viewers/MarkdownViewer.tsx`` in
kubeflow/pipelines, with markdown-to-jsx 7.7): it shows the first 400,000 characters only
(``MAX_MARKDOWN_STR_LENGTH``) with a "too large" banner, parses no raw HTML
(``disableParsingRawHTML``: a tag would show as text), renders GFM tables, and shows images whose
URL is a ``data:image/...`` URI (its sanitizer refuses ``javascript:``, ``vbscript:`` and any
other ``data:``). So the report is plain Markdown, with no HTML: the decision, the tables and the
text come first and stand on their own; the pictures come last, under "Pictures", as ``data:``
URIs, each only while the whole stays under the limit (the ones left out are named, and the HTML
report has them). Everything taken from the run (class names, paths, reasons, URIs) is escaped,
so it reads as text, never as markup.
"""

from __future__ import annotations

import base64
import re

from components.report.content import Picture, Report, Row, ScoreRow

MARKDOWN_LIMIT = 400_000  # characters the Kubeflow UI's Markdown viewer shows
PICTURES_HEADING = "## Pictures"
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~!&#{}])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def md(text: object) -> str:
    """``text`` as literal Markdown text on one line: specials backslash-escaped, control characters made spaces."""
    return _SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(text))).strip()


def alt_text(text: object) -> str:
    """Text for an image's alt: escaped, and without brackets or parentheses, which the UI's image pattern
    (markdown-to-jsx's, blind to backslash escapes) would take for the end of the alt text."""
    return md(re.sub(r"[\[\]()]", " ", str(text)))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return lines + [""]


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _scores(rows: list[ScoreRow], with_baseline: bool, first: str) -> list[str]:
    if with_baseline:
        header = [first, "candidate", "baseline", "change"]
        body = [[md(r.name), f"{r.candidate:.4f}", f"{r.baseline:.4f}", r.change_text()] for r in rows]
    else:
        header, body = [first, "candidate"], [[md(r.name), f"{r.candidate:.4f}"] for r in rows]
    if rows and rows[0].index is not None:
        header = ["#", *header]
        body = [[str(r.index), *cells] for r, cells in zip(rows, body, strict=True)]
    return table(header, body)


def _rows(rows: list[Row], with_baseline: bool, first: str = "") -> list[str]:
    if with_baseline:
        body = [[md(r.name), md(r.candidate), md(r.baseline), "changed" if r.changed else "same"] for r in rows]
        return table([first, "candidate", "baseline", ""], body)
    return table([first, "candidate" if first else ""], [[md(r.name), md(r.candidate)] for r in rows])


def render_markdown(report: Report, limit: int = MARKDOWN_LIMIT) -> str:
    """The whole report; the text and tables always, the pictures while the total stays within ``limit``."""
    lines = [f"# {report.decision}: {md(report.reason)}", "", md(report.compared_with), ""]
    if report.classes_note:
        lines += [md(report.classes_note), ""]
    compared = report.has_baseline
    lines += ["## Scores against the baseline" if compared else "## Scores", ""]
    if compared:
        lines += ["Changed scores first, the largest change first.", ""]
    lines += _scores(report.overall, compared, "score")
    lines += ["### Recall per class", ""]
    lines += _scores(report.per_class, compared, "class")
    lines += ["## What changed in the inputs", "", "### Training parameters", "", md(report.parameters_note), ""]
    if report.parameters:
        with_baseline = any(r.baseline is not None for r in report.parameters)
        lines += _rows(report.parameters, with_baseline, "parameter")
    lines += ["### Dataset", ""]
    lines += _rows(report.dataset, any(r.baseline is not None for r in report.dataset))
    lines += ["## Lineage", ""]
    lines += table(["", ""], [[md(r.name), md(r.candidate)] for r in report.lineage])
    text = "\n".join(lines)
    return text + _pictures(report, limit - len(text))


def _pictures(report: Report, budget: int) -> str:
    """The pictures section, within ``budget`` characters; what does not fit is named instead."""
    left_out: list[str] = []

    def fits(piece: str) -> bool:
        nonlocal budget
        if len(piece) + 400 > budget:  # room for the lines saying what was left out
            return False
        budget -= len(piece)
        return True

    parts = ["", PICTURES_HEADING, ""]
    for picture in report.pictures:
        block = f"### {md(picture.title)}\n\n{_image(picture)}\n\n{md(picture.description)}\n"
        if fits(block):
            parts.append(block)
        else:
            left_out.append(picture.title.lower())
    parts += ["### Worst-classified test images", "", md(report.worst_note), ""]
    if report.worst:
        rows = []
        for worst in report.worst:
            p = worst.prediction
            if worst.picture is None:
                cell = md(f"(no picture: {worst.problem})")
            else:
                alt = alt_text(f"true {p.true_class}, predicted {p.predicted_class}")
                image = f"![{alt}]({data_uri(worst.mime, worst.picture)})"
                cell = image if fits(image) else "(left out: see the HTML report)"
                if cell != image:
                    left_out.append(f"the picture of {p.path}")
            rows.append([cell, md(p.path), md(p.true_class), md(p.predicted_class),
                         f"{p.probability:.4f}", f"{p.true_class_probability:.4f}"])  # fmt: skip
        header = ["picture", "file", "true class", "predicted class", "probability", "true class probability"]
        parts += table(header, rows)
    if left_out:
        parts.append(
            md(f"Left out to stay within the Kubeflow UI's {MARKDOWN_LIMIT:,} characters of Markdown: "
               f"{', '.join(left_out[:5])}{' and more' if len(left_out) > 5 else ''}. The HTML report has them.")
        )  # fmt: skip
    return "\n".join(parts) + "\n"


def _image(picture: Picture) -> str:
    return f"![{alt_text(picture.description)}]({data_uri(picture.mime, picture.data)})"
