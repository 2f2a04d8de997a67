"""Your own training script, run by pytorchjob_train(command=[...]): the contract in 30 lines."""

import torch
import torch.distributed as dist
from torch import nn

from components.common.dataset import index_dataset
from components.common.images import load_preprocessed
from components.train.contract import save_model, script_environment, write_metrics

job = script_environment()  # dataset and output directories, hyperparameters, rank and world size
dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")  # torchrun set the environment
index, size = index_dataset(job.dataset_dir), int(job.hyperparameters.get("image_size", 32))
train = index.samples("train")[job.rank :: job.world_size]  # this rank's shard
x = torch.stack([torch.from_numpy(load_preprocessed(index.root / s.path, 3, (size, size))) for s in train]) / 255.0
y = torch.tensor([s.label for s in train])
torch.manual_seed(int(job.hyperparameters["seed"]))
net = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(index.classes))
)
model = nn.parallel.DistributedDataParallel(net)
optimizer = torch.optim.AdamW(model.parameters(), lr=float(job.hyperparameters["learning_rate"]))
for epoch in range(int(job.hyperparameters["epochs"])):
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print(f"[rank {job.rank}] epoch {epoch + 1} loss {loss.item():.4f}", flush=True)
if job.is_main:  # the library's format (weights, spec.json, ONNX): evaluate, build_bento and serving take it
    normalization = {"mean": [0.0] * 3, "std": [1.0] * 3}  # inputs were scaled to 0..1 only
    save_model(net, job.output_dir, index.classes, size, normalization=normalization)
    write_metrics(job.output_dir, {"train_loss": loss.item()})
dist.destroy_process_group()
