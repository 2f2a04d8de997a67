"""Where a replica pod stands in a multi-node torchrun run, from the variables its job's controller set.

torchrun reads ``PET_<OPTION>`` variables as its own options. A distributed job's controller sets them in
every replica pod: ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` (the Training Operator also sets ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which
stand in for those it leaves out). A command started under ``torchrun --no-python`` gets them as
arguments instead, which is what ``rendezvous_from_env`` gives.
"""

from __future__ import annotations


def rendezvous_from_env(env: dict[str, str]) -> tuple[int, list[str], bool]:
    """(processes per pod, torchrun's rendezvous arguments, whether this pod is node 0) from the pod's
    environment; a pod without ``PET_NNODES`` runs alone."""
    nproc = int(env.get("PET_NPROC_PER_NODE") or 1)
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
