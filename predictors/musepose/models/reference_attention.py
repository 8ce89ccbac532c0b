"""Reference attention as diffusers attention processors (MusePose's "mutual self-attention").

The ReferenceNet runs once on the reference latent. In each of its 16 spatial transformer blocks a
``ReferenceWriter`` records the self-attention input (the block's ``norm1`` output). In the denoising UNet the
block with the same name gets a ``ReferenceReader``: its self-attention uses keys and values from
``concat(own tokens, reference tokens)``, the reference tokens being the same for every frame. When the batch
is a classifier-free-guidance pair ``[uncond, cond]`` the unconditional half attends without reference, as
upstream.

Upstream pairs the blocks by sorting both block lists by decreasing width (a stable sort), which pairs blocks
of identical names; this module pairs by name directly. Upstream also casts the stored features to float16
before use, whatever the model dtype; ``ReferenceBank.load`` does the same so that fp32 runs match it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

# Upstream's reader keeps the recorded features in float16 even when the networks run in float32.
BANK_DTYPE = torch.float16


def reference_block_names(unet: nn.Module) -> list[str]:
    """The spatial transformer blocks that take part, in upstream's pairing order (width descending)."""
    blocks = [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, BasicTransformerBlock) and "motion_modules" not in name
    ]
    return [name for name, module in sorted(blocks, key=lambda item: -item[1].norm1.normalized_shape[0])]


class ReferenceBank:
    """Reference features by block name, plus how the reader batch is laid out."""

    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self.first_half_unconditional = False

    def load(self, recorded: dict[str, torch.Tensor], *, first_half_unconditional: bool) -> None:
        """``recorded``: the writers' features of one reference, [1, tokens, c] per block."""
        self.features = {name: value.to(BANK_DTYPE) for name, value in recorded.items()}
        self.first_half_unconditional = first_half_unconditional

    def clear(self) -> None:
        self.features = {}


def _attend_with_reference(attn: Attention, tokens: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SDPA self-attention of ``tokens`` [n, l, c] whose keys/values also cover ``reference`` [1, r, c].

    The reference projections are computed once and shared by all n rows instead of projecting n copies.
    """
    rows, heads = tokens.shape[0], attn.heads
    query = attn.to_q(tokens)
    key = torch.cat([attn.to_k(tokens), attn.to_k(reference).expand(rows, -1, -1)], dim=1)
    value = torch.cat([attn.to_v(tokens), attn.to_v(reference).expand(rows, -1, -1)], dim=1)
    head_dim = query.shape[-1] // heads
    query, key, value = (t.view(rows, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
    attended = F.scaled_dot_product_attention(query, key, value)
    attended = attended.transpose(1, 2).reshape(rows, -1, heads * head_dim).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](attended))


class ReferenceWriter(AttnProcessor2_0):
    """Self-attention that records its input under ``name``."""

    def __init__(self, store: dict[str, torch.Tensor], name: str):
        super().__init__()
        self.store = store
        self.name = name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.store[self.name] = hidden_states.detach().clone()
        return super().__call__(attn, hidden_states, *args, **kwargs)


class ReferenceReader(AttnProcessor2_0):
    """Self-attention over own tokens plus the bank's tokens for ``name`` (plain when the bank is empty)."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank = bank
        self.name = name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        **_,
    ) -> torch.Tensor:
        reference = self.bank.features.get(self.name)
        if reference is None:
            return super().__call__(attn, hidden_states)
        rows = hidden_states.shape[0]
        plain_rows = rows // 2 if self.bank.first_half_unconditional else 0
        # The stored values were rounded to float16; the projections run in the model dtype.
        outputs = [
            _attend_with_reference(attn, hidden_states[plain_rows:], reference.to(hidden_states.dtype))
        ]
        if plain_rows:
            outputs.insert(0, super().__call__(attn, hidden_states[:plain_rows]))
        return torch.cat(outputs) if plain_rows else outputs[0]


def install_reference_writers(reference_unet: nn.Module) -> dict[str, torch.Tensor]:
    """Give each ReferenceNet block a recording self-attention; returns the dict the features land in."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(reference_unet.named_modules())
    for name in reference_block_names(reference_unet):
        modules[name].attn1.set_processor(ReferenceWriter(store, name))
    return store


def install_reference_readers(denoising_unet: nn.Module, bank: ReferenceBank) -> list[str]:
    modules = dict(denoising_unet.named_modules())
    names = reference_block_names(denoising_unet)
    for name in names:
        modules[name].attn1.set_processor(ReferenceReader(bank, name))
    return names
