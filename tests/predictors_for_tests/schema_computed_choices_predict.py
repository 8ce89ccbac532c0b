"""``choices`` computed by a call: the Cog CLI stops the build (ErrChoicesNotResolvable)."""

from cog import BasePredictor, Input

STYLES = {"oil": 1, "ink": 2}


class Predictor(BasePredictor):
    def predict(self, style: str = Input(description="Style.", default="ink", choices=sorted(STYLES))) -> str:
        return style
