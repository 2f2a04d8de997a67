"""A BentoML service without torch: small enough to containerize in every CI run."""

import bentoml


@bentoml.service(name="tiny")
class Tiny:
    @bentoml.api
    def echo(self, text: str) -> str:
        return text
