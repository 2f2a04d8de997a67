"""Execute the notebooks as a reader would, and compare their outputs with the ones stored in the repository.

The notebooks are stored executed, so that the repository page shows their plots, the run report and the
run's summary. ``python -m tests.support.notebooks`` (``make notebooks``) executes them again and writes
them back; ``tests/test_notebooks.py`` executes them and fails where an output no longer matches.

Each execution gets an environment of its own (``notebook_environment``): a fresh working directory and
HOME (no ``~/.gitconfig``, ``~/.config/kfp``, matplotlibrc or IPython profile of this machine's user), no
Kubeflow host, a fixed hash seed, and the same floating-point arithmetic on every x86-64 machine: the
kernel and every process it starts run on at most ``NOTEBOOK_CPUS`` CPUs, and torch, MKL and oneDNN use
their AVX2 kernels, whatever the CPU offers beyond (``SAME_MATH_ON_X86``). What changes from one run to
the next anyway is replaced by a placeholder before outputs are compared (``VOLATILE``): the working
directory's path, run names and ids, commits of the throwaway data repository, bento versions,
timestamps, durations, ports. Pictures, the PNG outputs and the ``data:`` images inside the report, are
compared by their decoded pixels, so neither PNG compression nor metadata matters, only what is drawn.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import io
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from PIL import Image

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ("quickstart.ipynb", "cluster.ipynb")
WORKDIR_PREFIX = "kfp-torch-notebook-"  # every execution's working directory is a temporary one of this name
TIMEOUT = 600
REGENERATE = "make notebooks"

# Variables that would connect a notebook to a cluster, or bring in this machine's user settings.
CLEARED = (
    "KFP_HOST",
    "KF_PIPELINES_SA_TOKEN_PATH",
    "KF_PIPELINES_ENDPOINT",
    "KUBERNETES_SERVICE_HOST",
    "MPLBACKEND",
    "MPLCONFIGDIR",
    "IPYTHONDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
)

VOLATILE: list[tuple[re.Pattern, str]] = [
    # The execution's temporary working directory, wherever the temporary directories are.
    (re.compile(rf"(?:/[^\s'\"<>&]*)?/{WORKDIR_PREFIX}\w+"), "WORKDIR"),
    # kfp.local names a run after its pipeline and its start time.
    (re.compile(r"-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{6}\b"), "-TIME"),
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "TIMESTAMP"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "UUID"),
    # Commits of the throwaway data repository carry the time they were made.
    (re.compile(r"\b[0-9a-f]{40}\b"), "COMMIT"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "COMMIT"),
    # BentoML versions a bento or model by the time and a random part: name:version, name-version.tar.
    (re.compile(r"\b([a-z][a-z0-9_.-]*):[a-z0-9]{16}\b"), r"\1:VERSION"),
    (re.compile(r"\b([a-z][a-z0-9_.-]*)-[a-z0-9]{16}\.tar\b"), r"\1-VERSION.tar"),
    (re.compile(r"\b(?:127\.0\.0\.1|localhost):\d+"), "HOST:PORT"),
    # A bento archive holds its build time and paths, and tar rounds it up to whole 10 KiB records: one
    # character more in a path can add a record.
    (re.compile(r"'size_bytes': \d+"), "'size_bytes': SIZE"),
    # The ONNX export's largest difference from torch (~1e-7): float noise that moves with the CPU's kernels.
    (re.compile(r"\b\d(?:\.\d+)?e-(?:0[5-9]|[1-9]\d)\b"), "TINY"),
    (re.compile(r"\b\d+(?:\.\d+)? s\b"), "N s"),
]

# Training follows the last bit of every sum: Adam turns a rounding difference in a gradient near zero
# into a whole step, and the quickstart's accuracy moved from 0.9944 to 0.9833 between torch's AVX-512
# and AVX2 kernels on one machine, and to 0.9916 between two threads and one. So every execution uses
# the kernels every x86-64 machine of the last decade has, and the same number of CPUs (training takes
# as many threads as it may use CPUs).
SAME_MATH_ON_X86 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
NOTEBOOK_CPUS = 2


def notebook_environment(workdir: Path, **extra: str) -> dict[str, str]:
    """The kernel's environment: this process's, without a cluster or the user's settings, in ``workdir``."""
    env = {name: value for name, value in os.environ.items() if name not in CLEARED}
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env |= {"HOME": str(home), "KFP_TORCH_LIFECYCLE_WORKDIR": str(workdir / "work"), "PYTHONHASHSEED": "0"}
    env["OMP_NUM_THREADS"] = str(NOTEBOOK_CPUS)  # as many threads as CPUs, whatever the tests run with
    if platform.machine().lower() in ("x86_64", "amd64"):
        env |= SAME_MATH_ON_X86
    return env | extra


@contextlib.contextmanager
def on_few_cpus(count: int = NOTEBOOK_CPUS):
    """This thread, and the processes it starts meanwhile (they keep it), on at most ``count`` of its CPUs."""
    if not hasattr(os, "sched_setaffinity"):  # not Linux: the machine's own CPU count
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(allowed)[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """The notebook ``name`` executed top to bottom in a kernel with ``env``, as stored plus its outputs."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT,
        kernel_name="python3",
        record_timing=False,  # no execution timestamps in the stored cells
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    with on_few_cpus():
        client.execute(env=env)
    return notebook


# --- comparison ---------------------------------------------------------------------------------------------


DATA_IMAGE = re.compile(r"data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)")


# kfp.local runs the steps that do not depend on each other in an order of its own (it walks a protobuf map,
# whose order changes from process to process): the line per step, and the run summary's lists of files and
# outputs (in the order the steps ended), are compared as sets of lines.
STEP_LINE = re.compile(r"  [\w.-]+ (?:\.\.\.|[a-z]+ in N s)")
UNORDERED_SECTIONS = ("Files:", "Outputs:")


def normalized_text(text: str) -> str:
    """``text`` with its pictures as digests of their pixels and its volatile parts as placeholders."""
    text = DATA_IMAGE.sub(lambda match: f"data:image/png;pixels={pixels_digest(match['data'])}", text)
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return steps_in_any_order(text)


def steps_in_any_order(text: str) -> str:
    """``text`` with each run of step lines, and each of the summary's Files and Outputs lists, sorted."""
    lines, block, in_section = [], [], False
    for line in text.split("\n"):
        in_section = in_section and line != ""
        if in_section or STEP_LINE.fullmatch(line):
            block.append(line)
            continue
        lines += sorted(block)
        block = []
        lines.append(line)
        in_section = line in UNORDERED_SECTIONS
    return "\n".join(lines + sorted(block))


def pixels_digest(png_base64: str) -> str:
    """What the PNG shows: its size, mode and decoded pixels, hashed; not its compression or metadata."""
    image = Image.open(io.BytesIO(base64.b64decode(png_base64)))
    image.load()
    digest = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    return f"{image.mode}:{image.width}x{image.height}:{digest}"


def comparable_outputs(cell) -> list[str]:
    """A code cell's outputs as text, volatile parts replaced; a stream's pieces joined as they were written."""
    shown: list[str] = []
    stream, pending = None, ""
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name == stream:
            pending += output.text
            continue
        if stream is not None:
            shown.append(f"[{stream}]\n{normalized_text(pending)}")
            stream, pending = None, ""
        if output.output_type == "stream":
            stream, pending = output.name, output.text
        elif output.output_type == "error":
            shown.append(f"[error]\n{output.ename}: {normalized_text(output.evalue)}")
        else:
            for mime, data in sorted(output.get("data", {}).items()):
                value = f"pixels={pixels_digest(data)}" if mime == "image/png" else normalized_text(str(data))
                shown.append(f"[{output.output_type} {mime}]\n{value}")
    if stream is not None:
        shown.append(f"[{stream}]\n{normalized_text(pending)}")
    return shown


def differences(stored: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> list[str]:
    """Where the fresh execution's outputs differ from the stored ones, cell by cell, as unified diffs."""
    found = []
    for number, (before, after) in enumerate(zip(stored.cells, fresh.cells, strict=True)):
        old, new = comparable_outputs(before), comparable_outputs(after)
        if old != new:
            first_line = before.source.partition("\n")[0]
            lines = difflib.unified_diff(
                "\n".join(old).splitlines(), "\n".join(new).splitlines(), "stored", "now", lineterm="", n=2
            )
            found.append(f"cell {number} ({first_line}):\n" + "\n".join(lines))
    return found


# --- regeneration -------------------------------------------------------------------------------------------


def executed_in_temporary_directory(name: str) -> nbformat.NotebookNode:
    """``name`` executed in a fresh temporary working directory, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    try:
        return execute(name, notebook_environment(workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def regenerate(names: tuple[str, ...] = NAMES) -> None:
    """Execute each notebook and store it with its outputs."""
    for name in names:
        print(f"executing notebooks/{name} ...", flush=True)
        notebook = executed_in_temporary_directory(name)
        nbformat.validate(notebook)
        nbformat.write(notebook, NOTEBOOKS / name)
        print(f"  stored notebooks/{name}", flush=True)


if __name__ == "__main__":
    regenerate(tuple(sys.argv[1:]) or NAMES)
