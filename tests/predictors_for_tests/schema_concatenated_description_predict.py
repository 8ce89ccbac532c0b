"""A description made of two adjacent string literals: the Cog CLI writes its raw text, quotes and all."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(
            description="What to draw; one sentence.",
            default="a cat",
        ),
    ) -> str:
        return prompt
