"""Is a directory a dataset the pipeline can train on? Answered in seconds, before a local run starts.

``check_dataset_directory`` applies the dataset reader's own rules (``components.common.dataset``:
a layout it reads, at least two classes, no empty class folder, training images in every class)
and opens every image the run would train, validate or test on, so a bad folder is refused before
it is copied, versioned with DVC and pulled. Nothing is decoded at full size: a PNG file has every
chunk's checksum verified, a JPEG file is decoded at 1/8 scale, which still reads the whole stream
(a truncated file is found). Torch-free.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from components.common.dataset import DatasetFormatError, DatasetIndex, SplitRule, index_dataset
from components.common.images import ImageError, read_header

EXPECTED = (
    "expected one folder per class (<class>/<image>, at least 2 classes), optionally under train/, "
    "val/ (or validation/) and test/ (or evaluation/), or labels.csv (filename,label[,split]) beside the images"
)
UNREADABLE_LISTED = 3


class DatasetCheckError(ValueError):
    """The directory is not a dataset the pipeline can train on; one line that names it and what is expected."""


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as the PNG or JPEG image it claims to be; None when it can."""
    try:
        read_header(path)  # format and size; names a file that is not PNG or JPEG
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            else:
                image.verify()
    except ImageError as error:
        return str(error)
    except Exception as error:  # any failure to decode: Pillow raises OSError, SyntaxError, struct.error, ...
        return f"{path} cannot be decoded: {error}"
    return None


def check_dataset_directory(directory: str | Path, rule: SplitRule = SplitRule()) -> DatasetIndex:
    """The dataset's index when ``directory`` holds one the pipeline can train on, else ``DatasetCheckError``."""
    directory = Path(directory).expanduser()
    if not directory.exists():
        raise DatasetCheckError(f"{directory} does not exist; {EXPECTED}")
    if not directory.is_dir():
        raise DatasetCheckError(f"{directory} is not a directory; {EXPECTED}")
    try:
        index = index_dataset(directory, rule)
    except DatasetFormatError as error:
        raise DatasetCheckError(" ".join(str(error).split())) from None
    paths = [index.root / sample.path for split in index.splits.values() for sample in split]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        problems = [problem for problem in pool.map(unreadable, paths) if problem]
    if problems:
        listed = "; ".join(" ".join(problem.split()) for problem in problems[:UNREADABLE_LISTED])
        more = f"; and {len(problems) - UNREADABLE_LISTED} more" if len(problems) > UNREADABLE_LISTED else ""
        raise DatasetCheckError(
            f"{len(problems)} of {len(paths)} images under {index.root} cannot be read (fix or remove them): "
            f"{listed}{more}"
        )
    return index
