"""Speed of the policy's decoding, each figure a ratio measured in one run on one machine.

    lmrl-gym bench decoding [--batch 256 --new-tokens 64 --prompt-tokens 16 --repeats 3 --dtype fp32|bf16
                             --peak-tflops N --compile]

Tokens/s of one model (same weights, batch, prompts) generating ``--new-tokens`` tokens by sampling:

1. KV-cached: read the prompts once, then one incremental step per token (what our rollouts do);
2. per-step full recompute: re-run the whole prompt + prefix for every new token (what Stable-Baselines3's
   rollout does with a transformer features extractor);
3. one teacher-forced forward over the same final sequences (the limit: all tokens in parallel).

Beside tokens/s: the achieved TFLOP/s of rows 1 and 3 (what is counted: :func:`decoding_flops`) and their
MFU, achieved over the device's dense peak for the dtype (:data:`GPU_PEAK_TFLOPS`, by GPU name; on a CPU
or a GPU not in the table, ``--peak-tflops`` or n/a). ``--dtype bf16`` runs the model under
``torch.autocast(dtype=torch.bfloat16)`` (fp32 weights, as the policies' ``bf16_autocast``), on CUDA or
CPU. ``--compile`` adds a row: KV-cached sampling with the step compiled by ``torch.compile`` as
``TransformerPolicy(compile=True)`` does (the first, untimed round pays the compilation), against the same
eager teacher-forced limit. The rows are timed in turns, repeat by repeat (medians).

With ``--policy hf:PATH`` or ``--hf-size SIZE`` the command measures instead our rollout's decoding over a
``transformers`` model against that model's own ``generate`` (:mod:`agents.bench.hf_decoding`, below).

The command line (its flags) is :mod:`agents.commands.bench`; this module measures and formats.
"""

from __future__ import annotations

import functools
import re
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from agents.bench.machine import describe_machine
from agents.devices import resolve_device
from agents.models import TransformerConfig, TransformerLM
from agents.policies.transformer import compiled_step
from agents.sampling import KeyedSampler


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after one untimed call."""
    return interleaved_medians({"fn": fn}, repeats, device)["fn"]


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    before: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median wall seconds of each of ``fns`` over ``repeats`` rounds, each round calling every one once
    (after one untimed round): the ratios between them are taken under the same state of a shared,
    noisy machine, rather than each at its own moment. ``before`` (untimed) runs before every call, e.g.
    to restore the weights a timed update changed."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats + 1):
        for name, fn in fns.items():
            if before is not None:
                before()
            times[name].append(_seconds(fn, device))
    return {name: statistics.median(each[1:]) for name, each in times.items()}


DTYPES = ("fp32", "bf16")

# Dense peak TFLOP/s (no 2:4 sparsity) by GPU: (regex searched in torch.cuda.get_device_name, name, bf16
# tensor core, tf32 tensor core, fp32 without tensor cores), from NVIDIA's data sheets: "NVIDIA H100 Tensor
# Core GPU" (SXM, PCIe, NVL), "NVIDIA H200 Tensor Core GPU" (SXM, NVL), "NVIDIA A100 Tensor Core GPU",
# "NVIDIA L4 Tensor Core GPU", "NVIDIA L40S", "NVIDIA L40", "NVIDIA A10 Tensor Core GPU". Where a data sheet
# gives a tensor-core figure only with sparsity (Hopper, L4), the dense one is its half. More specific names
# come first ("H100 NVL" before "H100"); word boundaries keep "L4" from matching "L40S" and "A10" "A100"/"A10G".
GPU_PEAK_TFLOPS: tuple[tuple[str, str, float, float, float], ...] = (
    (r"H100.*NVL", "H100 NVL", 835.5, 417.5, 60.0),
    (r"H100.*PCIe", "H100 PCIe", 756.5, 378.0, 51.0),
    (r"H100", "H100 SXM", 989.5, 494.5, 67.0),
    (r"H200.*NVL", "H200 NVL", 835.5, 417.5, 60.0),
    (r"H200", "H200 SXM", 989.5, 494.5, 67.0),
    (r"A100", "A100", 312.0, 156.0, 19.5),
    (r"L40S", "L40S", 362.05, 183.0, 91.6),
    (r"\bL40\b", "L40", 181.05, 90.5, 90.5),
    (r"\bL4\b", "L4", 121.0, 60.0, 30.3),
    (r"\bA10\b", "A10", 125.0, 62.5, 31.2),
)


def device_peak_tflops(device: torch.device, dtype: str) -> tuple[float | None, str]:
    """The device's dense peak for ``dtype`` and where it comes from, or ``(None, why not)``.

    fp32 matmuls run on the tensor cores as TF32 only when PyTorch allows it
    (``torch.set_float32_matmul_precision("high")``; "highest", no TF32, is the default), so the fp32 peak
    follows that setting.
    """
    if device.type != "cuda":
        return None, f"no peak known for device {device}"
    name = torch.cuda.get_device_name(device)
    for pattern, label, bf16, tf32, fp32 in GPU_PEAK_TFLOPS:
        if re.search(pattern, name):
            if dtype == "bf16":
                return bf16, f"{label} dense bf16"
            if torch.get_float32_matmul_precision() != "highest":
                return tf32, f"{label} dense tf32"
            return fp32, f"{label} fp32 (TF32 off)"
    return None, f"{name} is not in the table of peaks"


def _pass_flops(c: TransformerConfig, queries: int, keys: int, heads: int, memory: int = 0) -> int:
    """One row's decoder pass: ``queries`` positions through every block, each attending over ``keys``
    columns (and, seq2seq, over ``memory`` encoder positions), the heads on ``heads`` positions."""
    d = c.n_embd
    # query, key-value and output projections (4 d^2) and the MLP (8 d^2); scores and weighted sum (2 d each)
    block = 2 * 12 * d * d * queries + 2 * 2 * d * queries * keys
    if memory:  # cross-attention: its query and output projections, scores and sum over the encoder
        block += 2 * 2 * d * d * queries + 2 * 2 * d * queries * memory
    return c.n_layer * block + 2 * (d * c.vocab_size + d) * heads  # LM head (tied) and value head


def _encode_flops(c: TransformerConfig, prompt_tokens: int) -> int:
    """One row's encoder pass over bos + prompt, and each decoder layer's cross keys and values of it."""
    d, p = c.n_embd, prompt_tokens + 1
    encoder = (c.n_encoder_layer or c.n_layer) * (2 * 12 * d * d * p + 2 * 2 * d * p * p)
    return encoder + c.n_layer * 2 * 2 * d * d * p


def decoding_flops(c: TransformerConfig, prompt_tokens: int, new_tokens: int) -> dict[str, int]:
    """FLOPs of one batch row for each way of decoding :func:`run` times (multiply by the batch).

    Counted: the matrix products, 2 FLOPs per multiply-add, as the model executes them: per position, 2 x
    the parameters of the matmuls it passes through (12 d^2 per block: attention's 4 d^2 and the MLP's
    8 d^2; cross-attention's 2 d^2 more; the tied LM head's d x vocab and the value head's d where they are
    applied), plus attention's 2 x 2 x d x context per block (scores and weighted sum), context being the
    key columns the kernel computes over: the prompt's padding columns are masked out but still computed.
    Embedding look-ups, layer norms, activations, softmax and sampling are not counted.

    - ``cached``: reading prompt + bos (causal: P + 1 positions, the heads on the last only; seq2seq: the
      encoder, then bos), then one step per new token over the growing cache (the last step too, whose
      logits go unused);
    - ``recompute``: for each new token, a whole forward over prompt, bos and the tokens so far;
    - ``teacher_forced``: one forward over prompt, bos and all new tokens (heads on bos and the new tokens).
    """
    p, t = prompt_tokens, new_tokens
    if c.arch == "causal":
        return {
            "cached": _pass_flops(c, p + 1, p + 1, 1)
            + sum(_pass_flops(c, 1, p + 2 + i, 1) for i in range(t)),
            "recompute": sum(_pass_flops(c, p + 1 + i, p + 1 + i, i + 1) for i in range(t)),
            "teacher_forced": _pass_flops(c, p + 1 + t, p + 1 + t, t + 1),
        }
    encode, m = _encode_flops(c, p), p + 1
    return {
        "cached": encode + _pass_flops(c, 1, 1, 1, m) + sum(_pass_flops(c, 1, 2 + i, 1, m) for i in range(t)),
        "recompute": sum(encode + _pass_flops(c, i + 1, i + 1, i + 1, m) for i in range(t)),
        "teacher_forced": encode + _pass_flops(c, t + 1, t + 1, t + 1, m),
    }


def autocast(device: torch.device, dtype: str):
    """``torch.autocast`` to bfloat16 for ``"bf16"`` (weights stay fp32), nothing for ``"fp32"``."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {list(DTYPES)}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


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
    dtype: str = "fp32",
    peak_tflops: float | None = None,
    compile: bool = False,
) -> dict[str, float | str | None]:
    """Time the three ways of decoding; tokens/s, ratios, achieved TFLOP/s and MFU.

    :param dtype: ``"fp32"`` or ``"bf16"`` (autocast). :param peak_tflops: the device's peak TFLOP/s for
        the MFU; None = :data:`GPU_PEAK_TFLOPS` by the GPU's name (no MFU where it has none).
    :param compile: also time KV-cached sampling with the step compiled as ``TransformerPolicy(compile=
        True)`` compiles it (the untimed first round pays the compilation), against the same eager limit.
    """
    dev = resolve_device(device)
    autocast(dev, dtype)  # an unknown dtype fails here, before the model is built
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

    # The project's sampler (agents.sampling), as rollouts use it: its keys are made once per pass.
    @torch.no_grad()
    def cached(step: Callable = model.step) -> torch.Tensor:
        sampler = KeyedSampler(0, 0, torch.arange(batch, device=dev), new_tokens)
        logits, _, cache = model.start(prompts, lengths, new_tokens)
        out = []
        for t in range(new_tokens):
            token = sampler.sample(logits, t)
            out.append(token)
            logits, _, cache = step(cache, token)
        return torch.stack(out, 1)

    @torch.no_grad()
    def recompute() -> torch.Tensor:
        sampler = KeyedSampler(0, 0, torch.arange(batch, device=dev), new_tokens)
        tokens = torch.zeros(batch, 0, dtype=torch.long, device=dev)
        for t in range(new_tokens):
            logits, _ = model(prompts, lengths, tokens)
            tokens = torch.cat([tokens, sampler.sample(logits[:, -1], t)[:, None]], dim=1)
        return tokens

    with autocast(dev, dtype):
        sequences = cached()

    @torch.no_grad()
    def teacher_forced() -> torch.Tensor:
        return model(prompts, lengths, sequences)[0]

    total = batch * new_tokens
    with autocast(dev, dtype):
        ways = {"cached": cached, "recompute": recompute, "teacher_forced": teacher_forced}
        if compile:
            ways["compiled"] = functools.partial(cached, compiled_step(model))
        medians = interleaved_medians(ways, repeats, dev)
    cached_s, recompute_s, teacher_s = medians["cached"], medians["recompute"], medians["teacher_forced"]
    flops = decoding_flops(config, prompt_tokens, new_tokens)
    if peak_tflops is not None:
        peak, peak_source = peak_tflops, "--peak-tflops"
    else:
        peak, peak_source = device_peak_tflops(dev, dtype)
    seconds = {"cached": cached_s, "teacher_forced": teacher_s}
    achieved = {way: flops[way] * batch / seconds[way] / 1e12 for way in seconds}
    return {
        "device": str(dev),
        "dtype": dtype,
        "cached_gflop_per_token": flops["cached"] / new_tokens / 1e9,
        "teacher_forced_gflop_per_token": flops["teacher_forced"] / new_tokens / 1e9,
        "cached_tflops": achieved["cached"],
        "teacher_forced_tflops": achieved["teacher_forced"],
        "peak_tflops": peak,
        "peak_source": peak_source,
        "cached_mfu": None if peak is None else achieved["cached"] / peak,
        "teacher_forced_mfu": None if peak is None else achieved["teacher_forced"] / peak,
        "cached_tokens_per_s": total / cached_s,
        "recompute_tokens_per_s": total / recompute_s,
        "teacher_forced_tokens_per_s": total / teacher_s,
        "cached_vs_recompute": recompute_s / cached_s,
        "cached_vs_teacher_forced": teacher_s / cached_s,
        **(
            {
                "compiled_tokens_per_s": total / medians["compiled"],
                "compiled_vs_teacher_forced": teacher_s / medians["compiled"],
            }
            if compile
            else {}
        ),
    }


def format_report(result: dict[str, float | str | None], settings: dict[str, object]) -> str:
    """The markdown table of :func:`run`'s ``result``, under lines naming the settings, the machine and the
    FLOP count and peak behind the TFLOP/s and MFU columns.

    :param settings: :func:`run`'s arguments (``arch``, ``n_layer``, ``n_embd``, ``vocab``, ``batch``,
        ``prompt_tokens``, ``new_tokens``, ``repeats``; ``dtype`` optional).
    """
    c, r = settings, result

    def mfu(way: str) -> str:
        return "n/a" if r.get(f"{way}_mfu") is None else f"{100 * r[f'{way}_mfu']:.2f}%"

    peak = "n/a" if r.get("peak_tflops") is None else f"{r['peak_tflops']:,.1f} TFLOP/s"
    lines = [
        f"{c['arch']} transformer, {c['n_layer']} layers x {c['n_embd']}, vocab {c['vocab']}, batch {c['batch']}, "
        f"{c['prompt_tokens']}-token prompts, {c['new_tokens']} new tokens, {c.get('dtype', 'fp32')}, "
        f"medians of {c['repeats']}",
        describe_machine(r["device"]),
        f"FLOPs counted (matmuls as executed, see decoding_flops): {r['cached_gflop_per_token']:.4g} GFLOP per "
        f"new token KV-cached, {r['teacher_forced_gflop_per_token']:.4g} teacher-forced; MFU peak: {peak} "
        f"({r['peak_source']})",
        "",
        "| decoding | tokens/s | KV-cached is | TFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|",
        f"| KV-cached sampling | {r['cached_tokens_per_s']:,.0f} | 1.00x | {r['cached_tflops']:.3g} | "
        f"{mfu('cached')} |",
        f"| per-step full recompute (SB3-style) | {r['recompute_tokens_per_s']:,.0f} | "
        f"{r['cached_vs_recompute']:.1f}x faster | - | - |",
        f"| one teacher-forced forward (the limit) | {r['teacher_forced_tokens_per_s']:,.0f} | "
        f"{r['cached_vs_teacher_forced']:.2f}x of it | {r['teacher_forced_tflops']:.3g} | "
        f"{mfu('teacher_forced')} |",
    ]
    if "compiled_tokens_per_s" in r:
        lines.append(
            f"| KV-cached sampling, step compiled (compile=True) | {r['compiled_tokens_per_s']:,.0f} | "
            f"{r['compiled_vs_teacher_forced']:.2f}x of the limit | - | - |"
        )
    return "\n".join(lines)
