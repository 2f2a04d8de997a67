"""The report step without KFP: read evaluate's files, build the report, write it as HTML and Markdown."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.evaluate.comparison_file import read_comparison
from components.evaluate.worst_images import read_worst_images
from components.report.content import build_report
from components.report.html_report import render_html
from components.report.markdown_report import render_markdown


def write_report(
    comparison_path: str | Path,
    worst_images_dir: str | Path,
    html_path: str | Path,
    markdown_path: str | Path,
    bento: Mapping[str, Any] | None = None,
    registration: Mapping[str, Any] | None = None,
    deployment: Mapping[str, Any] | None = None,
    image: str = "",
    worst_count: int = 12,
) -> tuple[str, str]:
    """Write both files (each complete or not at all); return (html, markdown)."""
    if isinstance(worst_count, bool) or not isinstance(worst_count, int) or not 0 <= worst_count <= 16:
        raise ValueError(f"worst_count must be an integer from 0 to 16 (evaluate keeps 16), got {worst_count!r}")
    report = build_report(
        read_comparison(comparison_path),
        read_worst_images(worst_images_dir),
        bento=bento,
        registration=registration,
        deployment=deployment,
        image=image,
        worst_count=worst_count,
    )
    html, markdown = render_html(report), render_markdown(report)
    for path, text in ((html_path, html), (markdown_path, markdown)):
        _write_atomic(Path(path), text)
    return html, markdown


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
