"""The tests' tiny Hugging Face assets: built by :mod:`agents.hf_tiny` (shared with the example's ``--tiny``
and the benchmarks), once per session by the ``hf_*_dir`` fixtures of ``conftest.py``."""

from agents.hf_tiny import build_bpe_tokenizer, build_classifier, build_gpt2, build_t5, task_texts

__all__ = ["build_bpe_tokenizer", "build_classifier", "build_gpt2", "build_t5", "task_texts"]
