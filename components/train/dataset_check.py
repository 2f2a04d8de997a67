"""The training data checked before anything heavy: torch-free, and no pixel is decoded.

``check_training_data`` indexes the dataset with ``components.common.dataset``, which
refuses a layout this library does not read, fewer than 2 classes, an empty class
folder, a file ``labels.csv`` names that is missing, and a class without images in
the train split. It adds what training needs beyond that: validation images when
early stopping is on. It takes well under a second for thousands of files, so the
train step runs it first, before torch is imported, a process group is joined or a
network is built. Every file's pixels are read later, by the decode pass
(``components.common.loader.decode_pass``), which names every file that cannot be
decoded before the first epoch.
"""

from __future__ import annotations

from pathlib import Path

from components.common.dataset import DatasetIndex, SplitRule, index_dataset


def check_training_data(
    dataset_dir: str | Path, rule: SplitRule = SplitRule(), early_stopping_patience: int = 0
) -> DatasetIndex:
    """The dataset's index, split by ``rule``; raise naming what makes it unfit to train on."""
    index = index_dataset(dataset_dir, rule)
    if early_stopping_patience and not index.samples("val"):
        raise ValueError(
            f"early_stopping_patience={early_stopping_patience} needs validation images, but the "
            "val split is empty: raise validation_fraction or add a val split"
        )
    return index
