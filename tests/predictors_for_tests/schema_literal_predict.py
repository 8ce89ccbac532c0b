"""Every form of ``Input`` the Cog CLI resolves statically, and a ``cog.BaseModel`` output with named files.

``choices`` come from a module-level list, from ``list(D.keys())`` of a module-level dict, and from ``+`` of
the two; bounds and defaults are number literals; each description is one string literal. The static
schema (tools/cog_schema.py) and the imported signature must agree on every field. predict() writes three
small files named after the output fields, so that the runners' handling of a named output is tested too.
"""

import tempfile

from cog import BaseModel, BasePredictor, Input, Path

SCHEDULERS = ["ddim", "euler"]
QUALITY_STEPS = {"draft": 10, "standard": 30, "high": 60}


class Output(BaseModel):
    video: Path
    pose_video: Path
    comparison: Path
    pose_preview: Path | None = None


class Predictor(BasePredictor):
    def predict(
        self,
        image: Path = Input(description="The reference image."),
        scheduler: str = Input(description="Sampler.", default="ddim", choices=SCHEDULERS),
        quality: str = Input(description="Preset.", default="standard", choices=list(QUALITY_STEPS.keys())),
        # The CLI resolves `+` of lists, not unpacking.
        sampler: str = Input(description="Either list.", default="draft", choices=SCHEDULERS + ["draft"]),  # noqa: RUF005
        window: int = Input(description="Frames per window.", default=48, ge=2, le=128),
        strength: float = Input(description="Strength.", default=0.75, ge=0.0, le=1.5),
        seed: int | None = Input(description="Random seed; empty draws one.", default=None),
        mask: Path | None = Input(description="An optional mask.", default=None),
    ) -> Output:
        out_dir = Path(tempfile.mkdtemp(prefix="schema-literal-"))
        files = {}
        for name in ("video", "pose_video", "comparison"):
            files[name] = out_dir / f"{name}.txt"
            files[name].write_text(f"{name} {scheduler} {quality} {window}")
        return Output(**files)
