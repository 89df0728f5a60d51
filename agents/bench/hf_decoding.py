"""Our KV-cached sampling loop over an :class:`~agents.policies.hf.HFPolicy` against ``model.generate`` on the
very same ``transformers`` model, as tokens/s and their ratio measured in one run on one machine.

    lmrl-gym bench decoding --policy hf:PATH   [--batch 32 --prompt-tokens 16 --new-tokens 32 --repeats 3]
    lmrl-gym bench decoding --hf-size 6x512    (a random GPT-2 built locally: nothing is downloaded)

Both sides get the same model, the same batch of prompts (random token ids, lengths drawn between half and
all of ``--prompt-tokens``), the same sampling distribution (the softmax in float32: temperature 1, no
top-k, no top-p; each side draws with its own sampler) and exactly ``--new-tokens`` new tokens per row:

- **ours**: the per-token work of a rollout (``agents.rollout.collect_trajectories`` without the env):
  ``policy.start`` on the env-style right-padded prompts, then per token ``log_softmax``, one draw
  of the project's inverse-CDF sampler (:mod:`agents.sampling`), the drawn token's log-prob and the state's value stored, ``policy.step``. So
  ours returns log-probs and values as well as tokens, which ``generate`` does not.
- **generate**: ``model.generate(input_ids, attention_mask, do_sample=True, top_k=0, top_p=1.0,
  temperature=1.0, max_new_tokens=N, min_new_tokens=N)`` on the same prompts left-padded (as
  ``transformers`` requires for decoder-only models), eos as the pad id.

Equal lengths: ``min_new_tokens`` makes ``generate`` set the eos logit to ``-inf`` until ``N`` tokens are out;
ours masks eos the same way. Tokens the policy never samples (special tokens other than eos, logits beyond
the tokenizer) are passed to ``generate`` as ``suppress_tokens``, so both sample one distribution. Before
timing, greedy decoding through both on 4 rows is compared and the report gives the share of equal tokens:
100% says the two sides compute the same logits, left padding and position ids included.

Tokens/s counts new tokens (``batch x new tokens``) per second of the whole call (prompt pass included);
each side is run once to warm up, then ``--repeats`` times, interleaved (ours, generate, ours, ...) so that
a busy machine slows both alike; medians. Causal language models only.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from agents.bench.machine import describe_machine
from agents.sampling import KeyedSampler, seed_from_generator

SIZES = {"tiny": (2, 64, 2)}  # the tests' GPT-2 (agents.hf_tiny.build_gpt2's defaults)
HEAD_WIDTH = 64  # GPT-2's own: n_head = n_embd // 64 unless a size names it
DEFAULT_SETTINGS = {"batch": 32, "prompt_tokens": 16, "new_tokens": 32}


def parse_size(text: str) -> tuple[int, int, int]:
    """``"tiny"`` (2 x 64, 2 heads), ``"LxE"`` (``E // 64`` heads) or ``"LxExH"`` as ``(n_layer, n_embd,
    n_head)``; ValueError otherwise."""
    if text in SIZES:
        return SIZES[text]
    match = re.fullmatch(r"(\d+)x(\d+)(?:x(\d+))?", text)
    if match is None:
        raise ValueError(f"expected 'tiny', LAYERSxWIDTH or LAYERSxWIDTHxHEADS (e.g. 6x512), got {text!r}")
    n_layer, n_embd = int(match[1]), int(match[2])
    n_head = int(match[3]) if match[3] else max(1, n_embd // HEAD_WIDTH)
    if min(n_layer, n_embd, n_head) < 1 or n_embd % n_head:
        raise ValueError(
            f"{text!r}: layers, width and heads must be >= 1 and the width a multiple of the heads"
        )
    return n_layer, n_embd, n_head


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No ``transformers`` progress bars while loading (the benchmark's output is its table)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def build_policy(size: str, device: str = "auto", seed: int = 0) -> tuple[Any, str]:
    """A random-weight GPT-2 of ``size`` (:func:`parse_size`) and the tests' BPE tokenizer, built with
    :func:`agents.hf_tiny.build_gpt2` into a temporary folder and loaded by path; ``(policy, description)``."""
    from agents.hf_tiny import build_gpt2
    from agents.policies.hf import HFPolicy

    n_layer, n_embd, n_head = parse_size(size)
    with tempfile.TemporaryDirectory() as folder, quiet_loading():
        build_gpt2(Path(folder), n_layer=n_layer, n_embd=n_embd, n_head=n_head, seed=seed)
        policy = HFPolicy.from_pretrained(folder, device=device)
    return policy, (
        f"random-weight GPT-2 built locally, {n_layer} layer{'s' * (n_layer != 1)} x {n_embd}, {n_head} heads, "
        f"{_size_of(policy)}"
    )


def describe_model(policy: Any) -> str:
    """The model's class, where it came from and its size, e.g. ``"GPT2LMHeadModel (gpt2), 124.4M
    parameters, 50257 logits"``."""
    source = getattr(policy.model.config, "_name_or_path", "") or "in memory"
    return f"{type(policy.model).__name__} ({source}), {_size_of(policy)}"


def _size_of(policy: Any) -> str:
    params = sum(p.numel() for p in policy.model.parameters())
    return f"{params / 1e6:.2f}M parameters, {policy.vocab_size} logits"


def make_prompts(
    policy: Any, batch: int, prompt_tokens: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts as the env gives them: ids ``[B, P]`` right-padded with the env's pad id, and lengths
    ``[B]`` between ``P // 2`` (at least 1) and ``P``. Ids are tokens the policy may sample, eos excluded."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.ones(policy.vocab_size, dtype=torch.bool)
    allowed[list(policy.invalid_ids) + [policy.tokenizer.eos_id]] = False
    allowed[len(policy.tokenizer.hf_tokenizer) :] = False
    choices = allowed.nonzero().squeeze(1)
    ids = choices[torch.randint(len(choices), (batch, prompt_tokens), generator=generator)]
    lengths = torch.randint(max(1, prompt_tokens // 2), prompt_tokens + 1, (batch,), generator=generator)
    ids = ids.masked_fill(torch.arange(prompt_tokens)[None, :] >= lengths[:, None], policy.tokenizer.pad_id)
    return ids.to(policy.device), lengths.to(policy.device)


def left_padded(
    prompts: torch.Tensor, lengths: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[B, P]`` as ``generate`` wants them: ``(input_ids, attention_mask)``, left-padded with
    ``pad_id`` (every row's prompt ends at the last column)."""
    p = prompts.shape[1]
    columns = torch.arange(p, device=prompts.device)
    mask = columns[None, :] >= (p - lengths)[:, None]
    source = (columns[None, :] - (p - lengths)[:, None]).clamp(min=0)
    return torch.where(mask, prompts.gather(1, source), pad_id), mask.long()


def generate_inputs(
    policy: Any, prompts: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The env-style prompts as the policy reads them, for ``generate``: bos prepended where the policy
    prepends it, left-padded with eos (GPT-2 has no pad token; the attention mask hides it)."""
    if policy.prepend_bos:
        bos = torch.full_like(prompts[:, :1], policy.bos_id)
        prompts, lengths = torch.cat([bos, prompts], 1), lengths + 1
    return left_padded(prompts, lengths, policy.tokenizer.eos_id)


@torch.no_grad()
def sample_ours(
    policy: Any,
    prompts: torch.Tensor,
    lengths: torch.Tensor,
    new_tokens: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A rollout's decoding without the env: ``(tokens, log_probs, values)``, each ``[B, new_tokens]``.
    ``generator=None`` decodes greedily (the equivalence check)."""
    b, dev = prompts.shape[0], policy.device
    # Eos is masked so that every row runs exactly new_tokens steps, as generate's min_new_tokens does.
    eos = torch.zeros(policy.vocab_size, dtype=torch.bool, device=dev)
    eos[policy.tokenizer.eos_id] = True
    tokens = torch.zeros(b, new_tokens, dtype=torch.long, device=dev)
    log_probs = torch.zeros(b, new_tokens, device=dev)
    values = torch.zeros(b, new_tokens, device=dev)
    if generator is not None:
        sampler = KeyedSampler(seed_from_generator(generator), 0, torch.arange(b, device=dev), new_tokens)
    logits, state = policy.start(prompts, lengths)
    for t in range(new_tokens):
        log_p = torch.log_softmax(logits.masked_fill(eos, float("-inf")), -1)
        if generator is None:
            action = log_p.argmax(-1)
        else:
            action = sampler.sample_probs(log_p.exp(), t)
        tokens[:, t] = action
        log_probs[:, t] = log_p.gather(1, action[:, None]).squeeze(1)
        values[:, t] = state.values
        if t + 1 < new_tokens:  # the last token is never fed (as in the rollout and in generate)
            logits, state = policy.step(state, action)
    return tokens, log_probs, values


@torch.no_grad()
def sample_generate(
    policy: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    new_tokens: int,
    do_sample: bool = True,
) -> torch.Tensor:
    """``model.generate`` with the same sampling and exactly ``new_tokens`` new tokens: ``[B, new_tokens]``."""
    eos = policy.tokenizer.eos_id
    sampling = {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0} if do_sample else {}
    out = policy.model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=eos,
        eos_token_id=eos,
        suppress_tokens=sorted(policy.invalid_ids) or None,
        # A hub model's generation_config may set these; neutral values keep the distribution plain.
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        **(sampling if do_sample else {"do_sample": False}),
    )
    return out[:, input_ids.shape[1] :]


def check_same_model(policy: Any, prompts: torch.Tensor, lengths: torch.Tensor, new_tokens: int) -> float:
    """The fraction of tokens on which greedy decoding through ours and through ``generate`` agree (1.0: the
    two sides compute the same logits; a rare near-tie may flip one token in a long sequence)."""
    ours, _, _ = sample_ours(policy, prompts, lengths, new_tokens, None)
    ids, mask = generate_inputs(policy, prompts, lengths)
    theirs = sample_generate(policy, ids, mask, new_tokens, do_sample=False)
    return float((ours == theirs).float().mean())


def interleaved_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each function, after one warm-up call each; the calls alternate
    between the functions so that a change of load on the machine hits all of them."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def run(
    policy: Any = None,
    hf_size: str = "tiny",
    batch: int = 32,
    new_tokens: int = 32,
    prompt_tokens: int = 16,
    repeats: int = 3,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Measure ours against ``generate``.

    :param policy: an :class:`~agents.policies.hf.HFPolicy`, or a folder / hub name to load it from
        (``HFPolicy.from_pretrained``); None: a random GPT-2 of ``hf_size`` built locally.
    :return: median tokens/s of each (``ours_tokens_per_s``, ``generate_tokens_per_s``), ``ratio`` (their
        quotient, ours / generate), ``ratio_range`` (lowest and highest quotient of one repeat's pair),
        ``greedy_agreement`` (:func:`check_same_model`), ``model``, ``device``.
    """
    from agents.policies.hf import HFPolicy

    if policy is None:
        policy, model = build_policy(hf_size, device, seed)
    else:
        if not isinstance(policy, HFPolicy):
            with quiet_loading():
                policy = HFPolicy.from_pretrained(policy, device=device)
        model = describe_model(policy)
    if policy.is_encoder_decoder:
        raise ValueError(
            "the HF decoding benchmark measures causal language models; this one is encoder-decoder"
        )
    positions = getattr(policy.model.config, "max_position_embeddings", None)
    needed = prompt_tokens + int(policy.prepend_bos) + new_tokens
    if positions is not None and needed > positions:
        raise ValueError(
            f"prompts of {prompt_tokens} tokens + {new_tokens} new tokens need {needed} positions; the model has "
            f"{positions}: lower --prompt-tokens or --new-tokens"
        )
    policy.eval()
    dev = policy.device
    prompts, lengths = make_prompts(policy, batch, prompt_tokens, seed)
    ids, mask = generate_inputs(policy, prompts, lengths)
    agreement = check_same_model(policy, prompts[:4], lengths[:4], min(new_tokens, 8))
    torch.manual_seed(seed)  # generate draws from the global generator
    generator = torch.Generator(device=dev).manual_seed(seed)
    seconds = interleaved_seconds(
        {
            "ours": lambda: sample_ours(policy, prompts, lengths, new_tokens, generator),
            "generate": lambda: sample_generate(policy, ids, mask, new_tokens),
        },
        repeats,
        dev,
    )
    total = batch * new_tokens
    ours, theirs = statistics.median(seconds["ours"]), statistics.median(seconds["generate"])
    pairs = [g / o for o, g in zip(seconds["ours"], seconds["generate"], strict=True)]
    return {
        "model": model,
        "device": str(dev),
        "ours_tokens_per_s": total / ours,
        "generate_tokens_per_s": total / theirs,
        "ratio": theirs / ours,
        "ratio_range": (min(pairs), max(pairs)),
        "greedy_agreement": agreement,
    }


def format_report(result: dict[str, Any], settings: dict[str, Any]) -> str:
    """The markdown table of :func:`run`'s ``result`` under lines naming the model, settings and machine."""
    import transformers

    r, c = result, settings
    low, high = r["ratio_range"]
    return "\n".join(
        [
            f"{r['model']}: batch {c['batch']}, prompts of {c['prompt_tokens'] // 2 or 1}-{c['prompt_tokens']} "
            f"tokens, exactly {c['new_tokens']} new tokens sampled (temperature 1, no top-k / top-p, eos "
            f"suppressed), medians of {c['repeats']} interleaved repeats",
            f"{describe_machine(r['device'])}; transformers {transformers.__version__}",
            f"greedy decoding through both gives the same tokens: {r['greedy_agreement']:.0%}",
            "",
            "| decoding (same model, prompts, sampling, lengths) | new tokens/s | ours is |",
            "|---|---:|---:|",
            f"| ours: HFPolicy start/step + inverse-CDF sampling, with log-probs and values | "
            f"{r['ours_tokens_per_s']:,.0f} | {r['ratio']:.2f}x ({low:.2f}-{high:.2f}x per repeat) |",
            f"| transformers `model.generate(do_sample=True)` | {r['generate_tokens_per_s']:,.0f} | 1.00x |",
        ]
    )
