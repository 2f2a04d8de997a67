"""`make bench`: every benchmark measured side by side in this run, printed as ratios."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks import (
    cli_refusal,
    ddp_scaling,
    deploy_overhead,
    distributed_kinds,
    dvc_pull_memory,
    dvc_pull_speed,
    input_pipeline,
    kfp_local_overhead,
    launcher_footprint,
    serving,
    train_throughput,
    training_memory,
    whole_pipeline,
)
from components.common.resources import format_bytes
from pipelines.demo_data import prepare_digits_repo

WORKDIR = Path(".local/bench")


def main() -> None:
    repo = prepare_digits_repo(WORKDIR)
    dataset_dir = Path(repo.repo_url) / repo.data_path

    train = train_throughput.run(dataset_dir)
    print(f"Training throughput (digits, batch 64; median of {train['rounds']} paired rounds)")
    print(f"  plain PyTorch loop      {train['plain_samples_per_s']:10.0f} samples/s")
    print(f"  train component, steps  {train['component_samples_per_s']:10.0f} samples/s")
    print(f"  ratio (median of pairs) {train['ratio']:10.3f}   (target >= 0.95)")
    print("  with validation and checkpoint every epoch:")
    print(f"  train component, epochs {train['component_loop_samples_per_s']:10.0f} samples/s")
    print(f"  ratio (median of pairs) {train['loop_ratio']:10.3f}")

    photos = input_pipeline.run(WORKDIR, count=int(os.environ.get("BENCH_TRAIN_IMAGES", "10000")))
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

    overhead = kfp_local_overhead.run(repo.repo_url)
    print("kfp.local per-step overhead (SubprocessRunner; best of 3)")
    print(f"  dvc_pull, direct call   {overhead['dvc_pull_direct_s']:10.2f} s")
    print(f"  dvc_pull via kfp.local  {overhead['dvc_pull_kfp_local_s']:10.2f} s")
    print(f"  overhead per step       {overhead['dvc_pull_overhead_s']:10.2f} s")
    print(f"  no-op component         {overhead['noop_component_s']:10.2f} s")
    print(f"  ratio direct/kfp.local  {overhead['ratio_direct_over_kfp_local']:10.3f}")

    ddp = ddp_scaling.run(dataset_dir)
    print("DDP on this machine (torchrun, Gloo, CPU; mean samples/s over epochs 2..6)")
    print(f"  1 process               {ddp['one_process_samples_per_s']:10.0f} samples/s")
    print(f"  2 processes             {ddp['two_processes_samples_per_s']:10.0f} samples/s")
    print(f"  ratio 2/1               {ddp['scaling']:10.3f}")
    print(f"  launch to first step    {ddp['seconds_to_first_step_1']:10.2f} s (1 process)")
    print(f"  launch to first step    {ddp['seconds_to_first_step_2']:10.2f} s (2 processes)")
    distributed_kinds.report(distributed_kinds.run(dataset_dir))

    serving.report(serving.run(dataset_dir))

    deploy_overhead.report(deploy_overhead.run(WORKDIR))

    pulls = dvc_pull_speed.run(Path(repo.repo_url))
    print("dvc_pull from gs:// (fake-gcs-server on 127.0.0.1) against a plain 4-thread google-cloud-storage download")
    for case, row in pulls.items():
        print(
            f"  {case:<10} {row['files']:6d} files  plain {row['plain_s']:6.2f} s  "
            f"dvc_pull {row['dvc_pull_s']:6.2f} s  speed ratio {row['ratio']:.3f}  (target >= 1.5)"
        )

    dvc_pull_memory.report(dvc_pull_memory.run(WORKDIR))

    launcher_footprint.report(launcher_footprint.run())

    cli_refusal.report(cli_refusal.run())

    whole_pipeline.report(whole_pipeline.run(WORKDIR))


if __name__ == "__main__":
    main()
