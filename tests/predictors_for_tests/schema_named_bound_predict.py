"""``le`` given by a module-level name: the Cog CLI drops the bound silently (it reads number literals)."""

from cog import BasePredictor, Input

MAX_WINDOW = 128


class Predictor(BasePredictor):
    def predict(self, window: int = Input(description="Frames.", default=48, ge=2, le=MAX_WINDOW)) -> str:
        return str(window)
