"""Maximum-likelihood (teacher-forcing) pretraining on a task's references: the usual start for RL on text.

Works on any :class:`~agents.policies.base.Policy` through its ``log_likelihood`` (the language model's own
next-token distribution) and its ``nn.Module`` parameters.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.policies.base import Policy, check_policy, env_setup_of
from lmrl_gym.env_setup import EncodedSplit


def reference_pairs(data: EncodedSplit, max_new_tokens: int, eos_id: int, pad_id: int):
    """Every (prompt, reference) pair of a split as tensors: prompts ``[M, P]``, targets ``[M, T]`` (the
    reference then eos, padded) and target lengths ``[M]``. References longer than ``T - 1`` tokens are cut
    to ``T`` tokens without eos (the env would truncate them the same way)."""
    rows, refs = np.nonzero(data.reference_mask)
    prompts = torch.as_tensor(data.prompts[rows], dtype=torch.long)
    ref_ids = torch.as_tensor(data.references[rows, refs])
    ref_len = torch.as_tensor(data.reference_lengths[rows, refs])
    width = max_new_tokens
    targets = torch.full((len(rows), width), pad_id, dtype=torch.long)
    keep = min(width, ref_ids.shape[1])
    targets[:, :keep] = ref_ids[:, :keep]
    positions = torch.arange(width)[None, :]
    targets = targets.masked_fill(positions >= ref_len[:, None], pad_id)
    has_eos = ref_len < width
    targets[has_eos, ref_len[has_eos]] = eos_id
    lengths = torch.clamp(ref_len + 1, max=width)
    return prompts, targets, lengths


def sequence_nll(policy: Policy, prompts, targets, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token negative log-likelihood of the targets and the number of target tokens.

    :param prompts: int ``[B, P]`` right-padded; :param targets: int ``[B, T]`` (reference then eos, padded);
    :param lengths: int ``[B]`` target tokens of each row.
    """
    mask = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
    return -policy.log_likelihood(prompts, targets, lengths).sum(), mask.sum()


def learning_rate_at(step: int, total: int, warmup: int, peak: float, floor_fraction: float = 0.1) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``floor_fraction * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor_fraction + (1 - floor_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def validation_loss(policy: Policy, data, batch_size: int) -> float:
    prompts, targets, lengths = data
    was_training = policy.training
    policy.eval()
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        batch = [x[start : start + batch_size].to(policy.device) for x in (prompts, targets, lengths)]
        nll, n = sequence_nll(policy, *batch)
        total, count = total + nll.item(), count + n.item()
    policy.train(was_training)
    return total / max(count, 1)


def pretrain(
    policy: Policy,
    env: Any,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.05,
    max_grad_norm: float = 1.0,
    patience: int | None = None,
    seed: int = 0,
    progress_bar: bool = False,
    verbose: int = 0,
) -> list[dict[str, float]]:
    """Train ``policy`` by maximum likelihood on the training references of ``env``'s task.

    Each (prompt, reference) pair is one example; the target is the reference followed by eos. AdamW with a
    linear warm-up and cosine decay, gradient-norm clipping, and the validation split's token NLL after
    every epoch. With ``patience``, training stops after that many epochs without a better validation loss
    and the best weights are restored.

    :param policy: a :class:`~agents.policies.base.Policy` built for ``env``.
    :param env: a TextGen env (id, ``TextGenEnv`` or ``TextGenVectorEnv``); its task and lengths are used.
    :param epochs: passes over the training pairs.
    :param batch_size: pairs per gradient step.
    :param learning_rate: peak learning rate.
    :param patience: early-stopping patience in epochs (None: run every epoch).
    :param seed: shuffling seed.
    :return: history, one dict per epoch: ``epoch``, ``train_loss`` and ``validation_loss`` (nats per
        token), ``learning_rate`` (at the epoch's end), ``seconds``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    check_policy(policy)
    setup = env_setup_of(env)
    policy.check_env(env)
    tok = policy.tokenizer
    # Both splits encoded as the env encodes its own (its tokenizer: the task's word tokenizer or a Hugging
    # Face one, its chat template and prompt width).
    pairs = reference_pairs(setup.encoded("train"), setup.max_new_tokens, tok.eos_id, tok.pad_id)
    val_pairs = (
        reference_pairs(setup.encoded("validation"), setup.max_new_tokens, tok.eos_id, tok.pad_id)
        if setup.task.examples("validation")
        else None
    )
    num_pairs = len(pairs[0])
    steps_per_epoch = math.ceil(num_pairs / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, int(warmup_fraction * total_steps))
    # Weight decay on matrices only (not biases, norms' gains), as nanoGPT does; frozen weights (LoRA's
    # base model) are left out.
    trainable = [p for p in policy.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best_loss, best_state, stale = float("inf"), None, 0
    step = 0
    bar = tqdm(total=total_steps, desc="pretrain", disable=not progress_bar, leave=False)
    policy.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(num_pairs, generator=generator)
        epoch_nll, epoch_tokens = 0.0, 0
        for start in range(0, num_pairs, batch_size):
            index = order[start : start + batch_size]
            prompts, targets, lengths = (x[index].to(policy.device) for x in pairs)
            lr = learning_rate_at(step, total_steps, warmup, learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            nll, count = sequence_nll(policy, prompts, targets, lengths)
            loss = nll / count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            epoch_nll, epoch_tokens = epoch_nll + nll.item(), epoch_tokens + count.item()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        val = validation_loss(policy, val_pairs, 4 * batch_size) if val_pairs is not None else float("nan")
        record = {
            "epoch": epoch,
            "train_loss": epoch_nll / max(epoch_tokens, 1),
            "validation_loss": val,
            "learning_rate": lr,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if verbose:
            print(
                f"epoch {epoch}: train {record['train_loss']:.4f}  validation {val:.4f}  "
                f"lr {lr:.2e}  {record['seconds']:.1f}s"
            )
        if patience is not None and val_pairs is not None:
            if val < best_loss:
                best_loss, best_state, stale = val, copy.deepcopy(policy.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
    bar.close()
    if best_state is not None:
        policy.load_state_dict(best_state)
    policy.eval()
    return history


def pretrain_subset(
    policy: Policy,
    env: Any,
    examples: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> float:
    """One maximum-likelihood pass over ``examples`` random training (prompt, reference) pairs.

    :func:`pretrain` always runs whole epochs; a start that leaves reinforcement learning room to improve
    (the demo, ``lmrl-gym bench suite``) is only partly trained, so this takes a random subset and runs a
    single pass at a constant learning rate.

    :param examples: how many pairs to train on (capped at the number of training pairs).
    :return: the token NLL of the last batch (nats per token); NaN when ``examples`` is 0.
    """
    if examples <= 0:
        return float("nan")
    setup = env_setup_of(env)
    tok = policy.tokenizer
    pairs = reference_pairs(setup.data, setup.max_new_tokens, tok.eos_id, tok.pad_id)
    subset = torch.randperm(len(pairs[0]), generator=torch.Generator().manual_seed(seed))[:examples]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=learning_rate, betas=(0.9, 0.95))
    policy.train()
    loss = torch.tensor(float("nan"))
    for start in range(0, len(subset), batch_size):
        index = subset[start : start + batch_size]
        prompts, targets, lengths = (x[index].to(policy.device) for x in pairs)
        nll, count = sequence_nll(policy, prompts, targets, lengths)
        loss = nll / count
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
    policy.eval()
    return float(loss.item())
