"""The framework's floor: a bare BentoML service that takes the same requests and returns a constant.

``bentoml serve benchmarks.bare_service:BareClassifier``. Our service divided by this one is what
validation, decoding and the model cost over BentoML's own HTTP path.
"""

from typing import Any

import bentoml

CONSTANT = {"predictions": [{"label": "0", "probability": 1.0}]}


@bentoml.service(name="bare_classifier", workers=1, traffic={"timeout": 30})
class BareClassifier:
    @bentoml.api(route="/predict")
    async def predict(self, images: list[Any]) -> dict:
        return CONSTANT
