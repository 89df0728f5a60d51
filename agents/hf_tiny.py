"""Tiny Hugging Face models and tokenizers built locally: for offline tests, `examples/hf_sentiment.py --tiny`
and the benchmarks. Nothing is downloaded.

A byte-level BPE tokenizer is trained with ``tokenizers`` on the built-in tasks' text, wrapped as a
``transformers`` fast tokenizer and saved with ``save_pretrained``; GPT-2, T5 and a sequence classifier
are built from configs with random weights and saved next to it. Tests then load everything by path,
through the same public API (``AutoTokenizer`` / ``AutoModel*.from_pretrained``) a user's hub name takes.
Needs the ``hf`` extra.

Two tokenizer flavours, as the hub has them:
- ``"gpt2"``: one special token ``<|endoftext|>`` serving as bos, eos and unk, and no pad token (GPT-2's).
- ``"t5"``: ``<pad>`` (id 0), ``</s>`` (eos, id 1), ``<unk>`` (id 2), no bos (T5's).

The tests' ``conftest.py`` builds each asset once per session (``hf_*_dir`` fixtures).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

VOCAB_SIZE = 400  # 256 byte symbols + merges + specials: small, yet words of the tasks become 1-3 tokens


@cache
def task_texts() -> tuple[str, ...]:
    """Prompts and references of every built-in task (all splits): the tokenizer's training text."""
    import lmrl_gym

    texts: list[str] = []
    for name in lmrl_gym.list_tasks():
        if name == "file":
            continue
        task = lmrl_gym.make_task(name)
        for split in ("train", "validation", "test"):
            for example in task.examples(split):
                texts.append(example.prompt)
                texts.extend(example.references)
    return tuple(texts)


def build_bpe_tokenizer(folder: str | Path, flavour: str = "gpt2", vocab_size: int = VOCAB_SIZE) -> Path:
    """Train a byte-level BPE tokenizer on :func:`task_texts` and ``save_pretrained`` it into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if flavour == "gpt2":
        specials = ["<|endoftext|>"]
        named = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    elif flavour == "t5":
        specials = ["<pad>", "</s>", "<unk>"]
        named = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        raise ValueError(f"unknown flavour {flavour!r}; valid: 'gpt2', 't5'")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(task_texts(), trainer)
    if flavour == "t5":  # T5 appends eos to every encoded text
        from tokenizers import processors

        eos_id = bpe.token_to_id("</s>")
        bpe.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", eos_id)]
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **named)
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_gpt2(
    folder: str | Path, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, seed: int = 0
) -> Path:
    """A GPT-2 with random weights and the ``"gpt2"`` tokenizer, saved into ``folder``."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    build_bpe_tokenizer(folder, "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def build_t5(folder: str | Path, num_layers: int = 2, d_model: int = 64, seed: int = 0) -> Path:
    """A T5 encoder-decoder with random weights and the ``"t5"`` tokenizer, saved into ``folder``. Its
    output layer has 28 more logits than the tokenizer has tokens, as the hub's T5 checkpoints do."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    build_bpe_tokenizer(folder, "t5")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = T5Config(
        vocab_size=len(tokenizer) + 28,
        d_model=d_model,
        d_ff=2 * d_model,
        d_kv=d_model // 2,
        num_layers=num_layers,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def build_classifier(
    folder: str | Path, labels: tuple[str, ...] = ("NEGATIVE", "POSITIVE"), seed: int = 0
) -> Path:
    """A sequence classifier (GPT-2 trunk, last-token pooling) with random weights and the ``"t5"``-flavour
    tokenizer (it needs a pad token), labels named as a sentiment model's (index 0 NEGATIVE)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    folder = Path(folder)
    build_bpe_tokenizer(folder, "t5")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_layer=1,
        n_head=2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder
