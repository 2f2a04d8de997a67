"""Building a pipeline without KFP's per-setter ``inspect.stack()``.

KFP 2.17's ``PipelineTask`` setters (``set_cpu_limit``, ``set_memory_request``, ``set_retry``, ...) each call
``inspect.stack()`` only to name the calling method in an error message. ``inspect.stack`` reads the source
of every frame and scans ``sys.modules`` on each call, which would be most of the time a pipeline takes to build
(every compile, every ``kfp-torch run`` argument check; the README's Benchmarks section has the figures).
``install()`` gives ``kfp.dsl.pipeline_task`` an ``inspect`` whose ``stack()`` returns the same frame records
(frame, file name, line number, function name) without reading any source; the error KFP raises is unchanged.
"""

from __future__ import annotations

import inspect
import sys
import types


def _stack(context: int = 1) -> list[tuple]:
    """``inspect.stack()``'s records from the caller outwards, with the first four fields only."""
    records = []
    frame = sys._getframe(1)
    while frame is not None:
        records.append((frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return records


def install() -> None:
    from kfp.dsl import pipeline_task

    if getattr(pipeline_task.inspect, "stack", None) is not _stack:
        pipeline_task.inspect = types.SimpleNamespace(**{**vars(inspect), "stack": _stack})
