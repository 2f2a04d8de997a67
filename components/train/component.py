"""KFP component: train an image classifier on a ``Dataset`` into a ``Model``. Its training parameters are the fields
of ``TrainConfig`` (``components/train/config.py``), described there."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.common.descriptions import described, field_descriptions
from components.container_images import TRAINING_IMAGE
from components.train.config import TrainConfig


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
@described(field_descriptions(TrainConfig))
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
        dataset: A dataset directory (e.g. dvc_pull's output): labels.csv (filename, label[, split]) or one folder
            per class, optionally under train/, val/ and test/. Files in no split are split by a hash of their path
            (test_fraction, validation_fraction), so a file never changes split as the data grows.
        pretrained_weights: Weights to start from, as a Model artifact (e.g. dsl.importer on a gs:// checkpoint):
            a torchvision checkpoint, a training checkpoint or a Model of this library; every key but the head's
            must match. Never downloaded from a hub. Unconnected: from scratch, or pretrained_weights_uri.
        pretrained_weights_uri: The same by a path or URI (gs://, s3://, minio://) instead of an artifact; empty
            for none. Give one of the two, not both.
        checkpoint_dir: Where a checkpoint is written after every epoch; a rerun with the same data and parameters
            resumes from it. Empty: next to the model output, which a retry of the same task reuses.

    Returns:
        model: weights.pt, spec.json (architecture, classes, preprocessing, split rule, versions, dataset
            repository, commit, md5, file count and bytes, parameters, history) and model.onnx (dynamic batch);
            a model_factory network also gets program.pt2. Written only when training succeeded. Metadata:
            format, architecture, classes, input_shape, dataset_commit, device, resumed_from_epoch.
        metrics: Per-epoch train_loss, train_accuracy, val_loss and val_accuracy (suffixed _epoch_N) and the
            final values.
    """
    import contextlib
    import gc
    import logging

    from components.common.spec import DATASET_LINEAGE_KEYS, model_metadata
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
        {**model_metadata(result.spec), "device": result.device, "resumed_from_epoch": result.resumed_from_epoch}
    )
    # The step's process ends here. Its heap (torch, torch.export and the ONNX exporter: millions of objects)
    # goes back to the OS at exit; left tracked, the interpreter's last garbage collection walks it first,
    # which took about a second of every train step.
    gc.freeze()
