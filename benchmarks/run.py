"""`make bench`: the benchmark sections, each measured side by side within itself and printed as ratios.

    python -m benchmarks.run                  every section, in order (what `make bench` runs)
    python -m benchmarks.run serving dvc_pull those sections alone (`make bench BENCH="serving dvc_pull"`)
    python -m benchmarks.run list             the sections, one a line (`make bench BENCH=list`)

``SECTIONS`` is the one list of sections; each prints its figures and the wall time it took. The input
pipeline's section trains on ``BENCH_TRAIN_IMAGES`` generated JPEGs (default ``DEFAULT_TRAIN_IMAGES``; the
10,000-image run: ``make bench BENCH=input_pipeline BENCH_TRAIN_IMAGES=10000``).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

WORKDIR = Path(".local/bench")
DEFAULT_TRAIN_IMAGES = 1000


@functools.cache
def digits_repo():
    """The demo's digits under DVC in ``WORKDIR`` (made once, reused by later runs)."""
    from pipelines.demo_data import prepare_digits_repo

    return prepare_digits_repo(WORKDIR)


def digits_dir() -> Path:
    repo = digits_repo()
    return Path(repo.repo_url) / repo.data_path


def train_throughput() -> None:
    """The train component's samples/s against a plain PyTorch loop, on the digits."""
    from benchmarks import train_throughput

    train = train_throughput.run(digits_dir())
    print(f"Training throughput (digits, batch 64; median of {train['rounds']} paired rounds)")
    print(f"  plain PyTorch loop      {train['plain_samples_per_s']:10.0f} samples/s")
    print(f"  train component, steps  {train['component_samples_per_s']:10.0f} samples/s")
    print(f"  ratio (median of pairs) {train['ratio']:10.3f}   (target >= 0.95)")
    print("  with validation and checkpoint every epoch:")
    print(f"  train component, epochs {train['component_loop_samples_per_s']:10.0f} samples/s")
    print(f"  ratio (median of pairs) {train['loop_ratio']:10.3f}")


def input_pipeline() -> None:
    """One epoch on generated 224x224 JPEGs against torchvision's ImageFolder + DataLoader."""
    from benchmarks import input_pipeline

    count = int(os.environ.get("BENCH_TRAIN_IMAGES") or DEFAULT_TRAIN_IMAGES)
    photos = input_pipeline.run(WORKDIR, count=count)
    print(
        f"Input pipeline and loop: mobilenet_v3_small, one epoch on {photos['images']} generated 224x224 JPEGs, "
        f"batch 64, {photos['workers']} DataLoader workers (the pod's CPUs)"
    )
    before, after = photos["plain_runs"]
    print(
        f"  plain ImageFolder + DataLoader loop   {photos['plain_images_per_s']:8.1f} images/s  "
        f"(mean of {before:.1f} before and {after:.1f} after ours)"
    )
    for key in ("streamed", "in_memory"):
        row = photos[key]
        print(
            f"  train component, {key.replace('_', ' '):<9}          {row['images_per_s']:8.1f} images/s  "
            f"ratio {photos[key + '_ratio']:.3f} (target >= 0.95)  "
            f"[{row['data_path']}; whole step {row['total_s']:.0f} s for a {row['epoch_s']:.0f} s epoch]"
        )
    if "gpu" in photos:
        gpu = photos["gpu"]
        print(f"GPU ({gpu['device']}): resnet50, 224 px, bf16, channels-last")
        print(f"  plain loop       {gpu['plain_images_per_s']:8.1f} images/s, GPU busy {gpu['plain_busy']:.0%}")
        print(f"  train component  {gpu['ours_images_per_s']:8.1f} images/s, GPU busy {gpu['ours_busy']:.0%}")
        print(f"  ratio            {gpu['ratio']:8.3f}   (target: >= 90 % busy)")
    else:
        print("GPU: no GPU on this machine; the resnet50 bf16 comparison was skipped")


def training_memory() -> None:
    """Peak PSS of training streamed under a memory budget."""
    from benchmarks import training_memory
    from components.common.resources import format_bytes

    memory = training_memory.run(WORKDIR)
    budget = memory["budget_bytes"]
    print(
        f"Training memory (mobilenet_v3_small at 224 px, memory budget {format_bytes(budget)}; peak PSS of the "
        "process and its workers)"
    )
    print(f"  runtime and model alone (40 images)       {format_bytes(memory['baseline_peak']):>10}")
    for row in memory["streamed"]:
        print(
            f"  streamed, {row['images']:5d} images ({format_bytes(row['decoded_bytes']):>9} decoded, "
            f"{row['decoded_bytes'] / budget:.1f}x the budget)  {format_bytes(row['peak']):>10}  "
            f"+{format_bytes(row['growth'])} ({row['growth'] / budget:.2f}x the budget)"
        )
    held = memory["in_memory"]
    print(
        f"  in memory, {held['images']:5d} images (budget lifted)         {format_bytes(held['peak']):>10}  "
        f"+{format_bytes(held['growth'])} (the data: {format_bytes(held['decoded_bytes'])})"
    )


def kfp_local_overhead() -> None:
    """The per-step overhead kfp.local adds around a component."""
    from benchmarks import kfp_local_overhead

    overhead = kfp_local_overhead.run(digits_repo().repo_url)
    print("kfp.local per-step overhead (SubprocessRunner; best of 3)")
    print(f"  dvc_pull, direct call   {overhead['dvc_pull_direct_s']:10.2f} s")
    print(f"  dvc_pull via kfp.local  {overhead['dvc_pull_kfp_local_s']:10.2f} s")
    print(f"  overhead per step       {overhead['dvc_pull_overhead_s']:10.2f} s")
    print(f"  no-op component         {overhead['noop_component_s']:10.2f} s")
    print(f"  ratio direct/kfp.local  {overhead['ratio_direct_over_kfp_local']:10.3f}")


def ddp_scaling() -> None:
    """Samples/s of 2 Gloo processes against 1, and torchrun's start-up."""
    from benchmarks import ddp_scaling

    ddp = ddp_scaling.run(digits_dir())
    print("DDP on this machine (torchrun, Gloo, CPU; mean samples/s over epochs 2..6)")
    print(f"  1 process               {ddp['one_process_samples_per_s']:10.0f} samples/s")
    print(f"  2 processes             {ddp['two_processes_samples_per_s']:10.0f} samples/s")
    print(f"  ratio 2/1               {ddp['scaling']:10.3f}")
    print(f"  launch to first step    {ddp['seconds_to_first_step_1']:10.2f} s (1 process)")
    print(f"  launch to first step    {ddp['seconds_to_first_step_2']:10.2f} s (2 processes)")


def distributed_kinds() -> None:
    """TrainJob and PyTorchJob under launcher=local, side by side."""
    from benchmarks import distributed_kinds

    distributed_kinds.report(distributed_kinds.run(digits_dir()))


def serving() -> None:
    """bentoml serve against the model's forward pass and a bare service."""
    from benchmarks import serving

    serving.report(serving.run(digits_dir()))


def deploy_overhead() -> None:
    """The deploy step's own overhead on the local target."""
    from benchmarks import deploy_overhead

    deploy_overhead.report(deploy_overhead.run(WORKDIR))


def dvc_pull() -> None:
    """dvc_pull from gs:// against a plain 4-thread download."""
    from benchmarks import dvc_pull_speed

    pulls = dvc_pull_speed.run(Path(digits_repo().repo_url))
    print("dvc_pull from gs:// (fake-gcs-server on 127.0.0.1) against a plain 4-thread google-cloud-storage download")
    for case, row in pulls.items():
        print(
            f"  {case:<10} {row['files']:6d} files  plain {row['plain_s']:6.2f} s  "
            f"dvc_pull {row['dvc_pull_s']:6.2f} s  speed ratio {row['ratio']:.3f}  (target >= 1.5)"
        )


def dvc_pull_memory() -> None:
    """dvc_pull's peak memory against stock dvc pull (two 1 GiB files)."""
    from benchmarks import dvc_pull_memory

    dvc_pull_memory.report(dvc_pull_memory.run(WORKDIR))


def launcher_footprint() -> None:
    """The pytorchjob_train launcher pod's imports, peak RSS and wall time."""
    from benchmarks import launcher_footprint

    launcher_footprint.report(launcher_footprint.run())


def cli_refusal() -> None:
    """How fast kfp-torch refuses a bad parameter, and compiles."""
    from benchmarks import cli_refusal

    cli_refusal.report(cli_refusal.run())


def whole_pipeline() -> None:
    """The whole local pipeline step by step, and the time beyond training."""
    from benchmarks import whole_pipeline

    whole_pipeline.report(whole_pipeline.run(WORKDIR))


# The sections, in the order `make bench` runs them; each one's name is its function's, its line in the listing
# its docstring.
SECTIONS = {
    section.__name__: section
    for section in (
        train_throughput,
        input_pipeline,
        training_memory,
        kfp_local_overhead,
        ddp_scaling,
        distributed_kinds,
        serving,
        deploy_overhead,
        dvc_pull,
        dvc_pull_memory,
        launcher_footprint,
        cli_refusal,
        whole_pipeline,
    )
}


def listing() -> str:
    width = max(map(len, SECTIONS))
    return "\n".join(f"{name:<{width}}  {section.__doc__}" for name, section in SECTIONS.items())


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    if names == ["list"]:
        print(listing())
        return 0
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(
            f"benchmarks: unknown section(s) {', '.join(unknown)}; the sections are:\n{listing()}",
            file=sys.stderr,
        )
        return 2
    began = time.monotonic()
    for name in names or SECTIONS:
        section_began = time.monotonic()
        SECTIONS[name]()
        print(f"  [{name}: {time.monotonic() - section_began:.0f} s]", flush=True)
    print(f"Benchmarks done in {time.monotonic() - began:.0f} s (load average {os.getloadavg()[0]:.1f}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
