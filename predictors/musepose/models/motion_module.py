"""MusePose's "Vanilla" temporal motion module (AnimateDiff v1 layout), built on diffusers' Attention.

Each module attends across the frames of one window at every spatial position. Key names follow the released
``motion_module.pth``: ``temporal_transformer.{norm,proj_in,transformer_blocks.0.{attention_blocks,norms,ff,
ff_norm},proj_out}``. The sinusoidal ``pos_encoder.pe`` table is a non-persistent buffer: it is recomputed
here (as upstream does at load time) and never read from a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn


def sinusoidal_table(max_len: int, channels: int) -> torch.Tensor:
    """[1, max_len, channels]: sin on even channels, cos on odd ones, float32 (upstream's formula)."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, max_len, channels)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class PositionalEncoding(nn.Module):
    def __init__(self, channels: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, channels), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # The index restarts at 0 for every window: position = frame index inside the window.
        return tokens + self.pe[:, : tokens.shape[1]]


class TemporalSelfAttention(Attention):
    """Self-attention across frames: tokens ``(b f) d c`` are regrouped to ``(b d) f c`` around the call."""

    def __init__(self, channels: int, heads: int, position_max_len: int | None):
        super().__init__(query_dim=channels, heads=heads, dim_head=channels // heads, bias=False)
        self.pos_encoder = PositionalEncoding(channels, position_max_len) if position_max_len else None

    def forward(self, hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
        rows, tokens, channels = hidden_states.shape
        batch = rows // frames
        sequences = hidden_states.view(batch, frames, tokens, channels).transpose(1, 2)
        sequences = sequences.reshape(batch * tokens, frames, channels)
        if self.pos_encoder is not None:
            sequences = self.pos_encoder(sequences)
        attended = self.processor(self, sequences)
        attended = attended.view(batch, tokens, frames, channels).transpose(1, 2)
        return attended.reshape(rows, tokens, channels)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, channels: int, heads: int, attention_blocks: int, position_max_len: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(channels, heads, position_max_len) for _ in range(attention_blocks)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(attention_blocks))
        self.ff = FeedForward(channels, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(channels)
        # When set, the feed-forward runs on slices of this many token rows (same result, less memory).
        self.feed_forward_rows: int | None = None

    def forward(self, hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            hidden_states = attention(norm(hidden_states), frames) + hidden_states
        normed = self.ff_norm(hidden_states)
        if self.feed_forward_rows:
            return torch.cat([self.ff(rows) for rows in normed.split(self.feed_forward_rows)]) + hidden_states
        return self.ff(normed) + hidden_states


class TemporalTransformer(nn.Module):
    def __init__(
        self,
        channels: int,
        heads: int,
        layers: int,
        attention_blocks: int,
        position_max_len: int | None,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, heads, attention_blocks, position_max_len)
            for _ in range(layers)
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
        """``hidden_states``: [(b f), c, h, w] with frames consecutive per batch entry."""
        rows, channels, height, width = hidden_states.shape
        residual = hidden_states
        tokens = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(rows, height * width, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, frames)
        tokens = self.proj_out(tokens)
        return tokens.reshape(rows, height, width, channels).permute(0, 3, 1, 2).contiguous() + residual


class VanillaTemporalModule(nn.Module):
    """One motion module; ``kwargs`` are inference_v2.yaml's ``motion_module_kwargs``."""

    def __init__(
        self,
        channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 128,
        temporal_attention_dim_div: int = 1,
    ):
        super().__init__()
        if any(kind != "Temporal_Self" for kind in attention_block_types) or temporal_attention_dim_div != 1:
            raise ValueError(
                "only Temporal_Self attention blocks with temporal_attention_dim_div=1 are supported"
            )
        self.temporal_transformer = TemporalTransformer(
            channels,
            heads=num_attention_heads,
            layers=num_transformer_block,
            attention_blocks=len(attention_block_types),
            position_max_len=temporal_position_encoding_max_len if temporal_position_encoding else None,
        )

    def forward(self, hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(hidden_states, frames)
