"""Transformer language models (decoder-only and encoder-decoder) with a value head and a KV cache."""

from agents.models.transformer import ARCHS, KVCache, TransformerConfig, TransformerLM

__all__ = ["ARCHS", "KVCache", "TransformerConfig", "TransformerLM"]
