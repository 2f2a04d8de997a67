"""KFP component: train an image classifier on a ``Dataset`` into a ``Model``."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.container_images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    pretrained_weights: Optional[Input[Model]] = None,
    pretrained_weights_uri: str = "",
    epochs: int = 12,
    batch_size: int = 64,
    learning_rate: float = 0.003,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    architecture: str = "small_cnn",
    model_factory: str = "",
    image_size: int = -1,
    channels: int = -1,
    augment: bool = True,
    normalization: str = "auto",
    optimizer: str = "adamw",
    momentum: float = 0.9,
    weight_decay: float = 0.01,
    lr_schedule: str = "constant",
    warmup_epochs: float = 0.0,
    label_smoothing: float = 0.0,
    early_stopping_patience: int = 0,
    gradient_accumulation_steps: int = 1,
    fine_tune: str = "full",
    workers: int = -1,
    memory_budget: str = "",
    checkpoint_dir: str = "",
):
    """Trains an image classifier: small_cnn, a torchvision architecture, or your own model_factory.

    Args:
        dataset: a dataset directory (e.g. ``dvc_pull``'s output): ``labels.csv`` (filename,
            label[, split]) or one folder per class, optionally under train/ val/ test/.
            Files in no split are split by a hash of their path (``test_fraction``,
            ``validation_fraction``), so a file never changes split as the data grows.
        model: ``weights.pt``, ``spec.json`` (architecture, classes, preprocessing, split rule,
            versions, dataset repository, commit, md5, file count and bytes, parameters, history)
            and ``model.onnx`` (dynamic batch); a ``model_factory`` network also gets
            ``program.pt2``. Written only when training succeeded.
        metrics: per-epoch ``train_loss``/``train_accuracy``/``val_loss``/``val_accuracy``
            (suffixed ``_epoch_N``) and the final values.
        pretrained_weights: weights to start from, as a Model artifact (e.g. ``dsl.importer``
            on a ``gs://`` checkpoint); ``pretrained_weights_uri`` takes a path or URI instead.
            Never downloaded from a hub. Every key but the head's must match.
        architecture: ``small_cnn`` or a torchvision classifier (resnet18, resnet50,
            mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0, convnext_tiny, vit_b_16, ...).
        model_factory: ``package.module:function`` importable in this image, returning an
            ``nn.Module`` for ``(num_classes=, in_channels=)``; replaces ``architecture``.
        image_size: side of the square the network sees (resize to cover, centre crop);
            -1: torchvision's resolution for its architectures, else the images' own size when
            they all share one, else 224.
        channels: 1 or 3; -1: 3 for torchvision architectures, else 1 when every image is grayscale.
        augment: random resized crop and horizontal flip while training.
        normalization: ``auto`` (the pretrained weights' values when known, else the data's),
            ``data`` or ``pretrained``.
        optimizer: ``adamw`` or ``sgd`` (with ``momentum``); ``weight_decay``; ``lr_schedule``
            ``constant`` or ``cosine``, after ``warmup_epochs`` of linear warmup;
            ``label_smoothing``; ``early_stopping_patience`` (epochs without a better validation
            loss, 0 off; the best epoch's weights are kept); ``gradient_accumulation_steps``.
        fine_tune: ``full``, or ``head`` to train the classification head only.
        workers: DataLoader worker processes; -1: the CPUs the pod's cgroup quota allows.
        memory_budget: decoded images are kept in memory when they fit (e.g. ``4Gi``), else
            streamed; empty: a quarter of the pod's memory limit.
        epochs, batch_size, learning_rate, seed: the same seed and data give the same weights on CPU.
        checkpoint_dir: where a checkpoint is written after every epoch; a rerun with the same
            data and parameters resumes from it. Empty: next to the model output, which a retry
            of the same task reuses.
    """
    import contextlib
    import gc
    import logging

    from components.common.spec import DATASET_LINEAGE_KEYS
    from components.common.storage import local_copy
    from components.train.config import TrainConfig
    from components.train.dataset_check import check_training_data
    from components.train.metrics import metric_values

    parameters = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = TrainConfig.from_parameters(parameters)
    config.validate()  # before anything is read or copied
    # The data next, before torch is imported (below) or anything built: a wrong folder fails in a second.
    check_training_data(dataset.path, config.split_rule, config.early_stopping_patience)

    from components.train.trainer import train_model

    if pretrained_weights is not None and pretrained_weights_uri:
        raise ValueError("give pretrained_weights (an artifact) or pretrained_weights_uri (a path or URI), not both")
    with contextlib.ExitStack() as stack:
        pretrained = pretrained_weights.path if pretrained_weights is not None else None
        if pretrained_weights_uri:
            pretrained = stack.enter_context(local_copy(pretrained_weights_uri))
        result = train_model(
            dataset_dir=dataset.path,
            model_dir=model.path,
            config=config,
            checkpoint_dir=checkpoint_dir or model.path.rstrip("/") + ".checkpoints",
            dataset_info={k: dataset.metadata[k] for k in DATASET_LINEAGE_KEYS if k in dataset.metadata},
            pretrained_weights=pretrained,
        )
    for name, value in metric_values(result.spec.training["history"]).items():
        metrics.log_metric(name, value)
    model.metadata.update(
        {
            "architecture": result.spec.architecture,
            "classes": result.spec.classes,
            "input_shape": result.spec.input_shape,
            "device": result.device,
            "resumed_from_epoch": result.resumed_from_epoch,
            "dataset_commit": result.spec.dataset.get("commit", ""),
            "format": "kfp-torch-lifecycle",
        }
    )
    # The step's process ends here. Its heap (torch, torch.export and the ONNX exporter: millions of objects)
    # goes back to the OS at exit; left tracked, the interpreter's last garbage collection walks it first,
    # which took about a second of every train step.
    gc.freeze()
