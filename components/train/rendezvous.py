"""Where a replica pod stands in a multi-node torchrun run, from the variables its job's controller set.

torchrun reads ``PET_<OPTION>`` variables as its own options. A distributed job's controller sets them in
every replica pod:

- the Training Operator (PyTorchJob): ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, and also
  ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which stand in for the ``PET_*`` ones it leaves out;
- Kubeflow Trainer's torch plugin (TrainJob): ``PET_NNODES``, ``PET_NPROC_PER_NODE`` (a number, or ``auto``
  when neither the TrainJob nor its runtime says), ``PET_NODE_RANK`` (the Job's completion index),
  ``PET_MASTER_ADDR`` (``<trainjob>-node-0-0.<trainjob>``) and ``PET_MASTER_PORT`` (29500), and nothing else.

A command started under ``torchrun --no-python`` gets them as arguments instead, which is what
``rendezvous_from_env`` gives.
"""

from __future__ import annotations

NPROC_WORDS = ("auto", "cpu", "gpu")  # what torchrun's --nproc-per-node takes besides a number


def rendezvous_from_env(env: dict[str, str]) -> tuple[int | str, list[str], bool]:
    """(processes per pod, torchrun's rendezvous arguments, whether this pod is node 0) from the pod's
    environment; a pod without ``PET_NNODES`` runs alone. The processes are a number, or one of torchrun's words
    (``auto``: one per GPU, else per CPU)."""
    given = (env.get("PET_NPROC_PER_NODE") or "1").strip()
    nproc: int | str = given if given in NPROC_WORDS else int(given)
    if not env.get("PET_NNODES"):
        return nproc, ["--standalone"], True
    node_rank = env.get("PET_NODE_RANK") or env.get("RANK") or "0"
    rendezvous = [
        f"--nnodes={env['PET_NNODES']}",
        f"--node-rank={node_rank}",
        f"--master-addr={env.get('PET_MASTER_ADDR') or env['MASTER_ADDR']}",
        f"--master-port={env.get('PET_MASTER_PORT') or env['MASTER_PORT']}",
    ]
    return nproc, rendezvous, node_rank == "0"
