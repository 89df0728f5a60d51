"""Speed of the policy's decoding, each figure a ratio measured in one run on one machine.

    lmrl-gym bench decoding [--batch 256 --new-tokens 64 --prompt-tokens 16 --repeats 3]

Tokens/s of one model (same weights, batch, prompts) generating ``--new-tokens`` tokens by sampling:

1. KV-cached: read the prompts once, then one incremental step per token (what our rollouts do);
2. per-step full recompute: re-run the whole prompt + prefix for every new token (what Stable-Baselines3's
   rollout does with a transformer features extractor);
3. one teacher-forced forward over the same final sequences (the limit: all tokens in parallel).

With ``--policy hf:PATH`` or ``--hf-size SIZE`` the command measures instead our rollout's decoding over a
``transformers`` model against that model's own ``generate`` (:mod:`agents.bench.hf_decoding`, below).

The command line (its flags) is :mod:`agents.commands.bench`; this module measures and formats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from agents.bench.machine import describe_machine
from agents.devices import resolve_device
from agents.models import TransformerConfig, TransformerLM


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(
    batch: int,
    new_tokens: int,
    prompt_tokens: int,
    vocab: int,
    n_layer: int,
    n_embd: int,
    repeats: int,
    device: str,
    arch: str = "causal",
) -> dict[str, float]:
    dev = resolve_device(device)
    config = TransformerConfig(
        vocab_size=vocab,
        arch=arch,
        n_layer=n_layer,
        n_head=max(1, n_embd // 32),
        n_embd=n_embd,
        max_positions=prompt_tokens + 1 + new_tokens,
    )
    torch.manual_seed(0)
    model = TransformerLM(config).to(dev).eval()
    prompts = torch.randint(4, vocab, (batch, prompt_tokens), device=dev)
    lengths = torch.randint(prompt_tokens // 2, prompt_tokens + 1, (batch,), device=dev)
    prompts = prompts.masked_fill(torch.arange(prompt_tokens, device=dev)[None, :] >= lengths[:, None], 0)
    generator = torch.Generator(device=dev)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(1)

    @torch.no_grad()
    def cached() -> torch.Tensor:
        generator.manual_seed(0)
        logits, _, cache = model.start(prompts, lengths, new_tokens)
        out = []
        for _ in range(new_tokens):
            token = sample(logits)
            out.append(token)
            logits, _, cache = model.step(cache, token)
        return torch.stack(out, 1)

    @torch.no_grad()
    def recompute() -> torch.Tensor:
        generator.manual_seed(0)
        tokens = torch.zeros(batch, 0, dtype=torch.long, device=dev)
        for _ in range(new_tokens):
            logits, _ = model(prompts, lengths, tokens)
            tokens = torch.cat([tokens, sample(logits[:, -1])[:, None]], dim=1)
        return tokens

    sequences = cached()

    @torch.no_grad()
    def teacher_forced() -> torch.Tensor:
        return model(prompts, lengths, sequences)[0]

    total = batch * new_tokens
    cached_s = median_seconds(cached, repeats, dev)
    recompute_s = median_seconds(recompute, repeats, dev)
    teacher_s = median_seconds(teacher_forced, repeats, dev)
    return {
        "device": str(dev),
        "cached_tokens_per_s": total / cached_s,
        "recompute_tokens_per_s": total / recompute_s,
        "teacher_forced_tokens_per_s": total / teacher_s,
        "cached_vs_recompute": recompute_s / cached_s,
        "cached_vs_teacher_forced": teacher_s / cached_s,
    }


def format_report(result: dict[str, float], settings: dict[str, object]) -> str:
    """The markdown table of :func:`run`'s ``result``, under a line naming the settings and the machine.

    :param settings: :func:`run`'s arguments (``arch``, ``n_layer``, ``n_embd``, ``vocab``, ``batch``,
        ``prompt_tokens``, ``new_tokens``, ``repeats``).
    """
    c, r = settings, result
    lines = [
        f"{c['arch']} transformer, {c['n_layer']} layers x {c['n_embd']}, vocab {c['vocab']}, batch {c['batch']}, "
        f"{c['prompt_tokens']}-token prompts, {c['new_tokens']} new tokens, medians of {c['repeats']}",
        describe_machine(r["device"]),
        "",
        "| decoding | tokens/s | KV-cached is |",
        "|---|---:|---:|",
        f"| KV-cached sampling | {r['cached_tokens_per_s']:,.0f} | 1.00x |",
        f"| per-step full recompute (SB3-style) | {r['recompute_tokens_per_s']:,.0f} | "
        f"{r['cached_vs_recompute']:.1f}x faster |",
        f"| one teacher-forced forward (the limit) | {r['teacher_forced_tokens_per_s']:,.0f} | "
        f"{r['cached_vs_teacher_forced']:.2f}x of it |",
    ]
    return "\n".join(lines)
