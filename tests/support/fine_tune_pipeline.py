"""A pipeline that fine-tunes from weights imported as a Model artifact (as a gs:// checkpoint would be).

Kept apart from the tests: KFP reads the pipeline's signature, which postponed annotations would
turn into strings.
"""

from kfp import dsl

from components.train.component import train


@dsl.pipeline(name="fine-tune")
def fine_tune(dataset_uri: str, weights_uri: str):
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    weights = dsl.importer(artifact_uri=weights_uri, artifact_class=dsl.Model)
    train(
        dataset=dataset.output,
        pretrained_weights=weights.output,
        architecture="resnet18",
        fine_tune="head",
        image_size=32,
        epochs=1,
        batch_size=8,
    )
