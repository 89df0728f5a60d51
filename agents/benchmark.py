"""Speed of the policy's decoding, each figure a ratio measured in one run on one machine.

    python -m agents.benchmark [--batch 256 --new-tokens 64 --prompt-tokens 16 --repeats 3]

Tokens/s of one model (same weights, batch, prompts) generating ``--new-tokens`` tokens by sampling:

1. KV-cached: read the prompts once, then one incremental step per token (what our rollouts do);
2. per-step full recompute: re-run the whole prompt + prefix for every new token (what Stable-Baselines3's
   rollout does with a transformer features extractor);
3. one teacher-forced forward over the same final sequences (the limit: all tokens in parallel).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--arch", default="causal", choices=["causal", "seq2seq"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    r = run(
        args.batch,
        args.new_tokens,
        args.prompt_tokens,
        args.vocab,
        args.n_layer,
        args.n_embd,
        args.repeats,
        args.device,
        args.arch,
    )
    print(
        f"{args.arch} transformer, {args.n_layer} layers x {args.n_embd}, vocab {args.vocab}, batch {args.batch}, "
        f"{args.prompt_tokens}-token prompts, {args.new_tokens} new tokens, {r['device']}, "
        f"torch {torch.__version__}, medians of {args.repeats}\n"
    )
    print("| decoding | tokens/s | KV-cached is |")
    print("|---|---:|---:|")
    print(f"| KV-cached sampling | {r['cached_tokens_per_s']:,.0f} | 1.00x |")
    print(
        f"| per-step full recompute (SB3-style) | {r['recompute_tokens_per_s']:,.0f} | "
        f"{r['cached_vs_recompute']:.1f}x faster |"
    )
    print(
        f"| one teacher-forced forward (the limit) | {r['teacher_forced_tokens_per_s']:,.0f} | "
        f"{r['cached_vs_teacher_forced']:.2f}x of it |"
    )


if __name__ == "__main__":
    main()
