"""Shared transformer building blocks: every model family assembles these (no family defines its own attention)."""

from brainfm_cli.layers.attention import Attention
from brainfm_cli.layers.block import Block, LayerScale, init_vit_weights
from brainfm_cli.layers.config import set_fused_attn, use_fused_attn
from brainfm_cli.layers.linear import Linear, set_onednn
from brainfm_cli.layers.mlp import Mlp
from brainfm_cli.layers.pos_embed import sincos_1d, sincos_2d

__all__ = ["Attention", "Block", "LayerScale", "Linear", "Mlp", "set_onednn", "init_vit_weights", "set_fused_attn", "sincos_1d",
           "sincos_2d", "use_fused_attn"]
