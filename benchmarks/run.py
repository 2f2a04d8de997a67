"""`make bench`: every benchmark measured side by side in this run, printed as ratios."""

from __future__ import annotations

from pathlib import Path

from benchmarks import ddp_scaling, kfp_local_overhead, train_throughput
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


if __name__ == "__main__":
    main()
