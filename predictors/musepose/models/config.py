"""MusePose's inference settings (``configs/inference_v2.yaml``): the UNet3D's extras and the sampler."""

from __future__ import annotations

UNET_ADDITIONAL_KWARGS = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 128,
        "temporal_attention_dim_div": 1,
    },
}
SCHEDULER_KWARGS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}
# The temporal position table has this many rows, so a window cannot be longer.
MAX_WINDOW = UNET_ADDITIONAL_KWARGS["motion_module_kwargs"]["temporal_position_encoding_max_len"]
