"""Where the IP-Adapter injects the style image, per model family and style mode.

The maps use diffusers' ``set_ip_adapter_scale`` block syntax and follow InstantStyle's choices. Blocks and
attention indices differ per family: SDXL's up_blocks.0 holds its style attention, but SD1.5's up_blocks.0
has no attention at all, so the SDXL map on SD1.5 switches the adapter off without an error.
"""

from __future__ import annotations

STYLE_MODES = ("style", "style_and_layout", "full")


def adapter_scale(family: str, mode: str, strength: float) -> float | dict:
    """The ``set_ip_adapter_scale`` argument for ``family`` ("sd15" | "sdxl") and ``mode``."""
    if family not in ("sd15", "sdxl"):
        raise ValueError(f"unknown model family {family!r}")
    scale = float(strength)
    if mode == "full":
        return scale
    if family == "sdxl":
        # InstantStyle's finding on SDXL: one attention carries the style, one the spatial layout.
        style = {"up": {"block_0": [0.0, scale, 0.0]}}
        layout = {"down": {"block_2": [0.0, scale]}}
    else:
        # InstantStyle's SD1.5 choice (infer_style_sd15.py): all of up_blocks.1 for style; down_blocks.2 and
        # the mid block add the layout. Unlisted blocks get scale 0, so "mid" must be named to be on.
        style = {"up": {"block_1": scale}}
        layout = {"down": {"block_2": scale}, "mid": scale}
    return style if mode == "style" else {**layout, **style}
