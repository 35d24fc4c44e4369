"""Masking collators: they draw which tokens a model sees and which it must predict, as index tensors.

Models only gather (I-JEPA's layout): a collator owns the randomness, so it can be seeded and fast-forwarded.
"""

from brainfm_cli.masking.utils import gather_tokens

__all__ = ["gather_tokens"]
