"""Feed a dataset's images to PyTorch: decoded once into memory when they fit a budget, streamed otherwise.

Every image goes through one *decode pass* before training or scoring starts.
It decodes each file with the evaluation preprocessing (``components.common.images``)
in DataLoader worker processes, hashes its bytes, and so

- fails the step on an unreadable or truncated file, naming every bad path, before any training;
- gives the data's fingerprint (what a checkpoint may be resumed for);
- gives per-channel statistics when normalisation comes from the data;
- measures the training images' pixel range (``spec.json``'s ``input_range``);
- keeps the decoded uint8 tensors when the *in-memory* path was chosen.

Then batches come from ``DecodedImages`` (in memory) or ``StreamedImages``
(decoded per epoch in workers, with pinned memory on CUDA and persistent
workers). Batches are uint8 N x C x H x W; normalisation happens on the device.

Augmentation (random resized crop and horizontal flip, ``torchvision.transforms.v2``)
is seeded per sample from (seed, epoch, index), so a batch is the same whatever
the number of workers, and a resumed run sees what an uninterrupted one saw.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from components.common.dataset import DatasetFormatError, Sample
from components.common.images import ImageError, decode, load_preprocessed, read_header
from components.common.resources import format_bytes

log = logging.getLogger(__name__)

RANDOM_RESIZED_CROP_SCALE = (0.08, 1.0)
RANDOM_RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
HORIZONTAL_FLIP_PROBABILITY = 0.5
MAX_BAD_FILES_LISTED = 10
MAX_PREFETCH_BATCHES = 4
# A DataLoader worker's start, measured on 2 CPUs with torch loaded: 2 workers took 0.45 s more than this
# process alone to decode the digits (0.17 s for their 1,438 8x8 PNG files).
WORKER_START_SECONDS = 0.25
# input_range's typical_max: this percentile of the training images' largest pixels.
TYPICAL_MAX_PERCENTILE = 1


@dataclass(frozen=True)
class Preprocessing:
    """How files become network input: recorded in ``spec.json`` and applied by evaluate and serving."""

    channels: int
    image_size: tuple[int, int]  # H, W
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augment: bool = False  # training only

    def record(self, normalization_source: str) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "image_size": list(self.image_size),
            "resize": "scale (bilinear, antialiased; JPEGs first at the largest DCT reduction that still covers) "
            "so the image covers image_size, then crop the centre",
            "decode": "16-bit scaled by 1/257, alpha dropped, grayscale replicated for 3 channels",
            "normalization_source": normalization_source,
            "train_augmentation": (
                {
                    "random_resized_crop": {
                        "scale": list(RANDOM_RESIZED_CROP_SCALE),
                        "ratio": [round(r, 6) for r in RANDOM_RESIZED_CROP_RATIO],
                    },
                    "horizontal_flip": HORIZONTAL_FLIP_PROBABILITY,
                }
                if self.augment
                else None
            ),
        }


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63)


def augmentation(image_size: tuple[int, int]):
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(
                image_size, scale=RANDOM_RESIZED_CROP_SCALE, ratio=RANDOM_RESIZED_CROP_RATIO, antialias=True
            ),
            v2.RandomHorizontalFlip(HORIZONTAL_FLIP_PROBABILITY),
        ]
    )


class _Augmenting:
    """Applies the seeded augmentation to one uint8 C x H x W tensor without touching the caller's RNG."""

    def __init__(self, image_size: tuple[int, int], seed: int):
        self.image_size, self.seed = image_size, seed
        self._transform = None

    def __call__(self, image: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        from torchvision import tv_tensors

        if self._transform is None:
            self._transform = augmentation(self.image_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self._transform(tv_tensors.Image(image)).as_subclass(torch.Tensor)


def _key(key) -> tuple[int, int]:
    return key if isinstance(key, tuple) else (0, int(key))


class StreamedImages(Dataset):
    """Files decoded on demand (in DataLoader workers): (uint8 C x H x W, label) per item."""

    def __init__(
        self,
        root: Path,
        samples: Sequence[Sample],
        preprocessing: Preprocessing,
        augment: bool = False,
        seed: int = 0,
    ):
        self.root, self.samples, self.preprocessing = Path(root), list(samples), preprocessing
        self.augmenting = _Augmenting(preprocessing.image_size, seed) if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        epoch, index = _key(key)
        sample = self.samples[index]
        path = self.root / sample.path
        if self.augmenting is None:
            array = load_preprocessed(path, self.preprocessing.channels, self.preprocessing.image_size)
            return torch.from_numpy(array), sample.label
        image = torch.from_numpy(decode(path, self.preprocessing.channels)).permute(2, 0, 1)
        return self.augmenting(image, epoch, index).contiguous(), sample.label


class DecodedImages(Dataset):
    """Images already decoded and preprocessed into one uint8 N x C x H x W tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False, seed: int = 0):
        self.images, self.labels = images, labels
        self.augmenting = _Augmenting(tuple(images.shape[2:]), seed) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        epoch, index = _key(key)
        image = self.images[index]
        if self.augmenting is not None:
            image = self.augmenting(image, epoch, index)
        return image, int(self.labels[index])

    def batch(self, keys: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch by fancy indexing: the fast path without augmentation."""
        indices = torch.tensor([_key(k)[1] for k in keys], dtype=torch.int64)
        return self.images[indices], self.labels[indices]


class _BatchedDecodedImages(DecodedImages):
    """``DecodedImages`` fetched a batch at a time (DataLoader calls ``__getitems__``)."""

    def __getitems__(self, keys: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(keys)


def _pass_through(batch):
    return batch


class EpochSampler(Sampler):
    """Wraps an index sampler (e.g. ``DistributedSampler``) to yield (epoch, index) keys."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler | None,
    workers: int,
    pin_memory: bool,
    in_flight_budget: int | None = None,
) -> DataLoader:
    """A DataLoader over either kind of dataset: batched indexing in memory, worker processes when streaming.

    ``in_flight_budget`` (bytes) caps the decoded batches the workers keep ready (``prefetch_factor``
    per worker, at most 4, at least 1), so a streamed dataset's memory stays within its budget.
    """
    if isinstance(dataset, DecodedImages) and dataset.augmenting is None:
        batched = _BatchedDecodedImages(dataset.images, dataset.labels)
        return DataLoader(
            batched,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=0,  # indexing a tensor: workers would only add copies
            collate_fn=_pass_through,
            pin_memory=pin_memory,
            generator=_private_generator(),
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_batches(dataset, batch_size, workers, in_flight_budget) if workers > 0 else None,
        generator=_private_generator(),
    )


def prefetch_batches(dataset: Dataset, batch_size: int, workers: int, in_flight_budget: int | None) -> int:
    """Batches each worker prepares ahead: 4 (a GPU never waits), fewer when they would not fit the budget."""
    if in_flight_budget is None or not len(dataset):
        return MAX_PREFETCH_BATCHES
    image, _ = dataset[0]
    batch_bytes = batch_size * image.numel() * image.element_size()
    return max(1, min(MAX_PREFETCH_BATCHES, in_flight_budget // max(1, workers * batch_bytes)))


def _private_generator() -> torch.Generator:
    """A DataLoader draws a seed for its workers from its generator each time it is iterated; from the
    global RNG that would shift the training loop's dropout draws, differently for each kind of loader."""
    return torch.Generator().manual_seed(0)


# --- the decode pass --------------------------------------------------------------------------------


class _DecodePassItems(Dataset):
    """Per file: its bytes' sha256 and the preprocessed image, or the error that names it."""

    def __init__(self, root: Path, samples: Sequence[Sample], channels: int, image_size: tuple[int, int]):
        self.root, self.samples, self.channels, self.image_size = Path(root), list(samples), channels, image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        path = self.root / sample.path
        try:
            content = path.read_bytes()
            array = load_preprocessed(content, self.channels, self.image_size, name=sample.path)
        except (OSError, ImageError) as error:
            message = str(error) if isinstance(error, ImageError) else f"{sample.path}: {error}"
            return index, None, None, message
        return index, hashlib.sha256(content).hexdigest(), torch.from_numpy(array), None


def _collate_pass(items):
    return items


def decode_workers(seconds_per_file: float, files_left: int, workers: int) -> int:
    """DataLoader workers for the files left: ``workers`` when decoding them here would take longer than
    with the workers, counting their start (``WORKER_START_SECONDS`` each); else 0, this process."""
    if workers <= 0:
        return 0
    here = seconds_per_file * files_left
    return workers if here > here / workers + WORKER_START_SECONDS * workers else 0


@dataclass
class DecodePassResult:
    digests: list[str]  # sha256 of each file's bytes, in sample order
    images: torch.Tensor | None  # uint8 N x C x H x W when kept
    channel_sum: torch.Tensor  # over the samples marked for statistics, 0..1 scale
    channel_sum_squares: torch.Tensor
    pixels: int = 0
    # Over the samples marked for the range: how many images have each largest pixel (0..255), and
    # the smallest and largest pixel of all.
    image_max_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(256, dtype=torch.int64))
    range_low: int = 255
    range_high: int = 0

    def statistics(self) -> dict[str, list[float]]:
        mean = self.channel_sum / self.pixels
        variance = (self.channel_sum_squares / self.pixels - mean**2).clamp_min(0)
        std = variance.sqrt().clamp_min(1e-6)
        return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}

    def input_range(self) -> dict[str, Any]:
        """``spec.json``'s ``input_range`` (see ``components.common.spec``); {} when no image was measured."""
        images = int(self.image_max_counts.sum())
        if not images:
            return {}
        # The smallest largest-pixel at or below which TYPICAL_MAX_PERCENTILE % of the images fall.
        rank = max(1, math.ceil(images * TYPICAL_MAX_PERCENTILE / 100))
        typical_max = int(torch.searchsorted(self.image_max_counts.cumsum(0), rank))
        return {
            "scale": [0, 255],
            "min": self.range_low,
            "max": self.range_high,
            "typical_max": typical_max,
            "typical_max_percentile": TYPICAL_MAX_PERCENTILE,
            "images": images,
        }


def preprocessed_batches(
    root: Path,
    samples: Sequence[Sample],
    channels: int,
    image_size: tuple[int, int],
    workers: int,
    what: str,
    batch_size: int = 64,
) -> Iterator[tuple[list[int], list[str], torch.Tensor]]:
    """Every file decoded with the evaluation preprocessing, in order: (sample indices, sha256 of their
    bytes, uint8 B x C x H x W) per batch of readable files.

    The first batch is decoded in this process and timed; the rest goes to ``workers`` DataLoader workers
    only when decoding it here would take longer than starting them (``decode_workers``).

    Unreadable files are collected rather than raised one at a time: once every file was tried,
    ``DatasetFormatError`` lists them all.
    """
    bad: list[str] = []
    items = _DecodePassItems(root, samples, channels, image_size)
    began = time.perf_counter()
    first = [items[index] for index in range(min(batch_size, len(items)))]
    rest = range(len(first), len(items))
    chosen = decode_workers((time.perf_counter() - began) / max(1, len(first)), len(rest), workers)
    if rest:
        log.info(
            "decoding %d files %s, after the first %d took %.2f s",
            len(items),
            f"with {chosen} DataLoader worker(s)" if chosen else "in this process",
            len(first),
            time.perf_counter() - began,
        )
    loader = DataLoader(
        items,
        batch_size=batch_size,
        sampler=rest,
        num_workers=chosen,
        collate_fn=_collate_pass,
        generator=_private_generator(),
    )
    for items_of_batch in itertools.chain([first] if first else [], loader):
        good = [(index, digest, array) for index, digest, array, error in items_of_batch if error is None]
        bad += [error for *_, error in items_of_batch if error is not None]
        if good:
            indices, digests, arrays = zip(*good, strict=True)
            yield list(indices), list(digests), torch.stack(arrays)
    if bad:
        listed = "\n  ".join(bad[:MAX_BAD_FILES_LISTED])
        more = f"\n  ... and {len(bad) - MAX_BAD_FILES_LISTED} more" if len(bad) > MAX_BAD_FILES_LISTED else ""
        raise DatasetFormatError(
            f"{len(bad)} of {len(samples)} image(s) in the {what} under {root} cannot be read; fix or remove them:"
            f"\n  {listed}{more}"
        )


def decode_pass(
    root: Path,
    samples: Sequence[Sample],
    channels: int,
    image_size: tuple[int, int],
    workers: int,
    keep: bool,
    statistics_for: int = 0,
    what: str = "dataset",
    range_for: int = 0,
) -> DecodePassResult:
    """Decode every file once (see the module docstring). The first ``statistics_for`` samples feed the
    per-channel statistics, the first ``range_for`` the pixel range. Raises ``DatasetFormatError``
    listing every unreadable file."""
    images = torch.empty((len(samples), channels, *image_size), dtype=torch.uint8) if keep else None
    result = DecodePassResult(
        [""] * len(samples),
        images,
        torch.zeros(channels, dtype=torch.float64),
        torch.zeros(channels, dtype=torch.float64),
    )
    for indices, digests, batch in preprocessed_batches(root, samples, channels, image_size, workers, what):
        for index, digest in zip(indices, digests, strict=True):
            result.digests[index] = digest
        if images is not None:
            images[indices] = batch
        counted = [i for i, index in enumerate(indices) if index < statistics_for]
        if counted:
            scaled = batch[counted].to(torch.float64).div_(255.0).transpose(0, 1).flatten(1)
            result.channel_sum += scaled.sum(1)
            result.channel_sum_squares += (scaled * scaled).sum(1)
            result.pixels += scaled.shape[1]
        measured = [i for i, index in enumerate(indices) if index < range_for]
        if measured:
            flat = batch[measured].flatten(1)
            highs = flat.amax(1)
            result.image_max_counts += torch.bincount(highs.to(torch.int64), minlength=256)
            result.range_low = min(result.range_low, int(flat.amin()))
            result.range_high = max(result.range_high, int(highs.max()))
    return result


# --- sizes and headers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderSummary:
    all_grayscale: bool
    sizes: tuple[tuple[int, int], ...]  # distinct (H, W), at most a few

    @property
    def uniform_size(self) -> tuple[int, int] | None:
        return self.sizes[0] if len(self.sizes) == 1 else None


def summarize_headers(root: Path, samples: Sequence[Sample], workers: int) -> HeaderSummary:
    """Modes and sizes from every file's header (no pixels decoded), for the automatic channels and size."""
    from concurrent.futures import ThreadPoolExecutor

    def header(sample: Sample):
        try:
            return read_header(root / sample.path)
        except ImageError:
            return None  # the decode pass reports it with the others

    with ThreadPoolExecutor(max_workers=max(4, workers * 2)) as pool:
        headers = [h for h in pool.map(header, samples) if h is not None]
    sizes = sorted({(h.height, h.width) for h in headers})
    return HeaderSummary(all_grayscale=all(h.grayscale for h in headers), sizes=tuple(sizes[:4]))


def decoded_bytes(count: int, channels: int, image_size: tuple[int, int]) -> int:
    return count * channels * image_size[0] * image_size[1]


def fits_in_memory(count: int, channels: int, image_size: tuple[int, int], budget: int) -> tuple[bool, str]:
    """Whether the decoded images fit ``budget`` bytes, and the reason in words for the log."""
    size = decoded_bytes(count, channels, image_size)
    if size <= budget:
        return True, (
            f"in memory: {count} decoded images take {format_bytes(size)}, within the memory budget of "
            f"{format_bytes(budget)}; each file is decoded once"
        )
    return False, (
        f"streaming: {count} decoded images would take {format_bytes(size)}, more than the memory budget of "
        f"{format_bytes(budget)}; files are decoded in every epoch by DataLoader workers"
    )


def to_device_batch(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device, channels_last: bool
) -> torch.Tensor:
    """uint8 N x C x H x W (pinned when on CUDA) to the normalised float input on ``device``."""
    images = images.to(device, non_blocking=True)
    batch = images.float().div_(255.0).sub_(mean).div_(std)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def normalization_tensors(normalization: dict[str, list[float]], device: torch.device):
    mean = torch.tensor(normalization["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return mean, std


def labels_tensor(samples: Sequence[Sample]) -> torch.Tensor:
    return torch.tensor([s.label for s in samples], dtype=torch.int64)
