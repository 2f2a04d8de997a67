"""make run's terminal: one line as each step starts and ends, the whole kfp.local log in the run's directory."""

from __future__ import annotations

import io

from pipelines.local import StepProgress

# What kfp.local writes, colours included (see kfp/local/logging_utils.py and task_dispatcher.py).
KFP_LOCAL_OUTPUT = """\
09:06:08.843 - INFO - Executing task \x1b[96m'dvc-pull'\x1b[0m
09:06:08.843 - INFO - Streamed logs:

    [KFP Executor 2026-11-27 09:06:08,900 INFO]: Got executor_input:
    {
        "inputs": {"parameterValues": {"jobs": 4}}
    }
    [KFP Executor 2026-11-27 09:06:09,400 INFO]: pulled 1799 files


09:06:09.450 - INFO - Task \x1b[96m'dvc-pull'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
09:06:09.451 - INFO - Executing task \x1b[96m'train'\x1b[0m
09:06:09.451 - INFO - Streamed logs:

    Traceback (most recent call last):
    components.common.dataset.DatasetFormatError: 1 of 1438 image(s) cannot be read
      data/raw/images/0001.png is not a readable PNG or JPEG image


09:06:12.000 - ERROR - Task \x1b[96m'train'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
"""


def test_the_terminal_gets_a_line_a_step_and_the_log_gets_everything():
    log, terminal = io.StringIO(), io.StringIO()
    progress = StepProgress(log, terminal)
    for chunk in (KFP_LOCAL_OUTPUT[:100], KFP_LOCAL_OUTPUT[100:]):  # lines may arrive in pieces
        progress.write(chunk)
    shown = terminal.getvalue().splitlines()
    assert shown[0] == "  dvc-pull ..."
    assert shown[1].startswith("  dvc-pull success in ") and shown[2] == "  train ..."
    assert shown[3].startswith("  train failure in ")
    # A failed step shows its own last lines, not the executor input of the steps before it.
    tail = shown[4:]
    assert tail[0] == "    |     Traceback (most recent call last):"
    assert tail[-1].endswith("data/raw/images/0001.png is not a readable PNG or JPEG image")
    assert not any("executor_input" in line or "Streamed logs" in line for line in shown)
    assert log.getvalue() == KFP_LOCAL_OUTPUT
