"""`make bench`: every benchmark measured side by side in this run, printed as ratios."""

from __future__ import annotations

from pathlib import Path

from benchmarks import ddp_scaling, dvc_pull_speed, kfp_local_overhead, serving, train_throughput
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

    served = serving.run(dataset_dir)
    print(f"Serving (bentoml serve on 127.0.0.1, {served['concurrency']} concurrent clients in a second process,")
    print("one 8x8 image per request; the load generator shares the 2 cores)")
    print(f"  direct PyTorch, batch 64 {served['direct_images_per_s']:9.0f} images/s")
    for key in ("batching_on", "batching_off"):
        row = served[key]
        print(
            f"  {key.replace('_', ' '):<12} {row['requests_per_s']:8.0f} req/s  p50 {row['p50_ms']:6.1f} ms  "
            f"p99 {row['p99_ms']:6.1f} ms  ratio to direct {row['ratio_to_direct']:.4f}  errors {row['errors']}"
        )

    pulls = dvc_pull_speed.run(Path(repo.repo_url))
    print("dvc_pull from gs:// (fake-gcs-server on 127.0.0.1) against a plain 4-thread google-cloud-storage download")
    for case, row in pulls.items():
        print(
            f"  {case:<10} {row['files']:6d} files  plain {row['plain_s']:6.2f} s  "
            f"dvc_pull {row['dvc_pull_s']:6.2f} s  speed ratio {row['ratio']:.3f}  (target >= 0.8)"
        )


if __name__ == "__main__":
    main()
