"""KFP component: train an image classifier on a ``Dataset`` into a ``Model``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int = 12,
    batch_size: int = 64,
    learning_rate: float = 0.003,
    seed: int = 0,
    validation_fraction: float = 0.1,
    architecture: str = "small_cnn",
    checkpoint_dir: str = "",
):
    """Trains a classifier on the ``train`` split of a labelled image folder.

    Args:
        dataset: a labelled image folder (``labels.csv`` with filename, label,
            split), e.g. the output of ``dvc_pull``.
        model: output directory with ``weights.pt`` and ``spec.json``
            (architecture, classes, input shape, normalisation, versions,
            dataset commit and md5). Written only when training succeeded.
        metrics: per-epoch ``train_loss``/``train_accuracy``/``val_loss``/
            ``val_accuracy`` (suffixed ``_epoch_N``) and the final values.
        epochs, batch_size, learning_rate, seed, validation_fraction: training
            parameters; the same seed and data give the same weights on CPU.
        architecture: one of ``components.common.model.ARCHITECTURES``.
        checkpoint_dir: where a checkpoint is written after every epoch; a
            rerun with the same data and parameters resumes from it. Empty:
            next to the model output, which a retry of the same task reuses.
    """
    import logging

    from components.train.trainer import TrainConfig, metric_values
    from components.train.trainer import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run_training(
        dataset_dir=dataset.path,
        model_dir=model.path,
        config=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            validation_fraction=validation_fraction,
            architecture=architecture,
        ),
        checkpoint_dir=checkpoint_dir or model.path.rstrip("/") + ".checkpoints",
        dataset_info={key: dataset.metadata[key] for key in ("commit", "md5", "repo_url") if key in dataset.metadata},
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
        }
    )
