"""Training on photo-sized JPEGs: our train component against a plain torchvision ImageFolder + DataLoader loop.

Both train the same torchvision network for one epoch on the same generated 224x224 JPEGs with
the same batch size, worker count, optimiser and augmentation (random resized crop, horizontal
flip); images/s of the epoch are compared. Ours is measured on both of its data paths: streamed
(decoded every epoch by DataLoader workers, like the plain loop) and in memory (decoded once,
before the epoch, when the decoded images fit the memory budget). On a GPU the same comparison
runs with bf16 autocast and channels-last, and the GPU's busy fraction is sampled with NVML.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from components.common.resources import usable_cpus
from components.train.trainer import TrainConfig, train_model

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def generate_jpegs(directory: Path, count: int, classes: int = 10, size: int = 224, seed: int = 0) -> Path:
    """``count`` JPEGs in class folders (reused when already there): smooth colour fields with noise,
    which compress and decode like photos rather than like flat colour or pure noise."""
    marker = directory / f".complete-{count}-{classes}-{size}"
    if marker.is_file():
        return directory
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = i % classes
        folder = directory / f"class_{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        coarse[..., label % 3] = np.clip(coarse[..., label % 3].astype(int) + 60, 0, 255)
        field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:06d}.jpg", quality=90)
    marker.write_text("")
    return directory


class GpuBusy:
    """The GPU's utilisation sampled with NVML while a loop runs (nvidia-ml-py, which BentoML brings)."""

    def __init__(self, interval: float = 0.1):
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        self.samples: list[int] = []
        self.interval, self.stopped = interval, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stopped.wait(self.interval):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stopped.set()
        self.thread.join()

    @property
    def fraction(self) -> float:
        return sum(self.samples) / (100 * len(self.samples)) if self.samples else 0.0


def plain_epoch(root: Path, architecture: str, workers: int, batch_size: int, device: torch.device) -> float:
    """The loop a torchvision tutorial writes; images/s of one epoch."""
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    cuda = device.type == "cuda"
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=cuda,
        prefetch_factor=4 if workers else None,
    )
    torch.manual_seed(0)
    model = torchvision.models.get_model(architecture, weights=None, num_classes=len(dataset.classes)).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    began = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    return len(dataset) / (time.perf_counter() - began)


def ours(root: Path, architecture: str, workers: int, batch_size: int, memory_budget: str) -> dict:
    """The train module on the same images; images/s of the epoch, and the decode pass apart."""
    config = TrainConfig(
        architecture=architecture,
        image_size=224,
        epochs=1,
        batch_size=batch_size,
        test_fraction=0.0,
        validation_fraction=0.0,
        normalization="data",
        workers=workers,
        memory_budget=memory_budget,
        augment=True,
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        result = train_model(root, Path(tmp) / "model", config)
    return {
        "images_per_s": result.history[0].samples_per_second,
        "epoch_s": result.history[0].seconds,
        "total_s": time.perf_counter() - began,  # index, decode pass, epoch, ONNX export
        "data_path": result.spec.training["data_path"],
    }


def run(workdir: Path, count: int = 10_000, batch_size: int = 64) -> dict:
    root = generate_jpegs(workdir / f"jpegs-{count}", count)
    workers = usable_cpus()
    torch.set_num_threads(workers)
    cpu = torch.device("cpu")
    # The plain loop before and after ours: the machine's drift shows, and the ratios use the mean.
    plain_before = plain_epoch(root, "mobilenet_v3_small", workers, batch_size, cpu)
    streamed = ours(root, "mobilenet_v3_small", workers, batch_size, memory_budget="1Mi")
    in_memory = ours(root, "mobilenet_v3_small", workers, batch_size, memory_budget="64Gi")
    plain_after = plain_epoch(root, "mobilenet_v3_small", workers, batch_size, cpu)
    plain = (plain_before + plain_after) / 2
    results = {
        "images": count,
        "workers": workers,
        "plain_images_per_s": plain,
        "plain_runs": [plain_before, plain_after],
        "streamed": streamed,
        "in_memory": in_memory,
        "streamed_ratio": streamed["images_per_s"] / plain,
        "in_memory_ratio": in_memory["images_per_s"] / plain,
    }
    if torch.cuda.is_available():
        results["gpu"] = run_gpu(root, workers)
    return results


def run_gpu(root: Path, workers: int, batch_size: int = 128) -> dict:
    """resnet50 at 224 in bf16 with channels-last: ours against the plain loop, and how busy the GPU was."""
    device = torch.device("cuda")
    with GpuBusy() as plain_busy:
        plain = plain_epoch(root, "resnet50", workers, batch_size, device)
    with GpuBusy() as ours_busy:
        streamed = ours(root, "resnet50", workers, batch_size, memory_budget="1Mi")
    return {
        "device": torch.cuda.get_device_name(),
        "plain_images_per_s": plain,
        "plain_busy": plain_busy.fraction,
        "ours_images_per_s": streamed["images_per_s"],
        "ours_busy": ours_busy.fraction,  # sampled over the whole call, decode pass and export included
        "ratio": streamed["images_per_s"] / plain,
    }
