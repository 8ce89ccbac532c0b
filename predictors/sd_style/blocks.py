"""Where the IP-Adapter injects the style image, per model family and style mode.

The maps use diffusers' ``set_ip_adapter_scale`` block syntax. Blocks and attention indices differ per
family: SDXL's up_blocks.0 holds its style attentions, but SD1.5's up_blocks.0 has no attention at all, so the
SDXL map on SD1.5 switches the adapter off without an error. SD1.5's style attentions sit in up_blocks.1
(InstantStyle's choice for SD1.5) and its lowest-resolution down block with attention is down_blocks.2.
"""

from __future__ import annotations

STYLE_MODES = ("style", "style_and_layout", "full")


def _style_map(family: str, strength: float) -> dict:
    if family == "sdxl":
        return {"up": {"block_0": [0.0, strength, 0.0]}}
    return {"up": {"block_1": [strength, strength, strength]}}


def _layout_map(family: str, strength: float) -> dict:
    # The second attention of the deepest down block with attention carries the layout in both families.
    return {"down": {"block_2": [0.0, strength]}}


def adapter_scale(family: str, mode: str, strength: float) -> float | dict:
    """The ``set_ip_adapter_scale`` argument for ``family`` ("sd15" | "sdxl") and ``mode``."""
    if family not in ("sd15", "sdxl"):
        raise ValueError(f"unknown model family {family!r}")
    if mode == "full":
        return float(strength)
    if mode == "style":
        return _style_map(family, strength)
    if mode == "style_and_layout":
        return {**_layout_map(family, strength), **_style_map(family, strength)}
    raise ValueError(f"unknown style mode {mode!r}; expected one of {', '.join(STYLE_MODES)}")
