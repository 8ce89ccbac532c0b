"""A description made of two adjacent string literals: the Cog CLI writes its raw text, quotes and all.

(The pieces are too long to fit on one line together, so the formatter leaves them apart.)
"""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(
            description="What to draw: one sentence naming the subject, the setting and the light; "
            "the style comes from the style image.",
            default="a cat",
        ),
    ) -> str:
        return prompt
