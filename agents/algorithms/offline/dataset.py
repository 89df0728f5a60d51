"""Offline data sets: where :class:`~agents.algorithms.offline.FilteredBC` and
:class:`~agents.algorithms.offline.ILQL` read their trajectories from.

A data set is a :class:`~agents.rollout.Trajectories` (packed episodes with per-step rewards), made from
one of four sources (:func:`resolve_dataset`):

- ``None``: the env task's training references as demonstrations, each (prompt, reference) pair one
  episode (the reference then eos, cut to ``max_new_tokens`` as the env cuts an episode), rewarded by what
  the env pays for it: the references are stepped through a :class:`~lmrl_gym.TextGenVectorEnv` of the
  train split, all in one batch (:func:`replay_rewards`);
- a :class:`~agents.rollout.Trajectories`, e.g. rollouts of any policy
  (:func:`agents.rollout.collect_trajectories`);
- a path to a file written by :meth:`Trajectories.save <agents.rollout.Trajectories.save>`;
- a path ending in ``.jsonl``: JSON Lines, one episode per line, ``{"prompt": str, "text": str,
  "reward": number}``, encoded with the env's tokenizer as the env encodes its own prompts and references
  (chat template included); the reward is the episode's return, paid at its last step.

Every data set is checked against the policy before training (:func:`check_dataset`): not empty, ids
inside the vocabulary and actions the policy can take, widths the env allows, finite rewards.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.pretrain import reference_pairs
from agents.rollout import Trajectories
from lmrl_gym.env_setup import EnvSetup
from lmrl_gym.vector_env import TextGenVectorEnv

JSONL_FIELDS = {"prompt": str, "text": str, "reward": (int, float)}


def describe_source(dataset: Any) -> str:
    """A short name of a data set source, for messages and logs."""
    if dataset is None:
        return "the task's training references"
    if isinstance(dataset, Trajectories):
        return f"Trajectories of {dataset.num_episodes} episodes"
    return str(dataset)


def needs_env(dataset: Any) -> bool:
    """Whether building the data set needs the env (its task's references, or its tokenizer for a JSON
    Lines file)."""
    return dataset is None or (isinstance(dataset, (str, os.PathLike)) and _is_jsonl(dataset))


def _is_jsonl(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".jsonl"


def resolve_dataset(dataset: Any, policy: Any, setup: EnvSetup | None) -> Trajectories:
    """The checked :class:`Trajectories` of ``dataset`` (see the module doc for the sources), on the
    policy's device.

    :param policy: the policy that will learn from it (vocabulary, invalid ids and widths are checked).
    :param setup: the env's :class:`~lmrl_gym.env_setup.EnvSetup` (train split); needed for ``None`` and
        ``.jsonl`` sources only.
    :raises ValueError: a source of another type, an unreadable file, or a data set that fails
        :func:`check_dataset`.
    """
    name = describe_source(dataset)
    if needs_env(dataset) and setup is None:
        raise ValueError(
            f"the offline data set ({name}) is built with the env's task and tokenizer: give env="
        )
    if dataset is None:
        traj = reference_trajectories(setup, policy.vocab_size)
    elif isinstance(dataset, Trajectories):
        traj = dataset
    elif isinstance(dataset, (str, os.PathLike)):
        if _is_jsonl(dataset):
            traj = jsonl_trajectories(dataset, setup, policy.vocab_size)
        else:
            traj = Trajectories.load(dataset)
    else:
        raise ValueError(
            f"dataset must be None (the task's training references), a Trajectories, a path to a saved "
            f"Trajectories file or a .jsonl path; got {type(dataset).__name__}"
        )
    check_dataset(traj, policy, name)
    return move_trajectories(traj, policy.device)


def move_trajectories(traj: Trajectories, device: torch.device) -> Trajectories:
    """``traj`` with every tensor on ``device`` (the same object when they are there already)."""
    state = trajectories_state(traj)
    if all(v.device == device for v in state.values() if isinstance(v, torch.Tensor)):
        return traj
    return Trajectories(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state.items()})


def trajectories_state(traj: Trajectories) -> dict[str, Any]:
    """Every field of ``traj`` by name (the tensors themselves, not copies): what a checkpoint stores."""
    return {f.name: getattr(traj, f.name) for f in fields(traj)}


# ---------------------------------------------------------------------------------------------- sources


def reference_trajectories(setup: EnvSetup, vocab_size: int) -> Trajectories:
    """Every (prompt, reference) pair of the train split as an episode: the reference then eos (a reference
    of ``max_new_tokens`` tokens or more is cut to ``max_new_tokens`` without eos, where the env ends the
    episode), rewarded per step by the env (:func:`replay_rewards`)."""
    if not setup.task.has_references:
        raise ValueError(
            f"dataset=None uses the training references as demonstrations, but task {setup.task.name!r} has "
            "none (prompt-only data): pass dataset= (Trajectories, a saved Trajectories file or a .jsonl "
            "path)"
        )
    tok = setup.tokenizer
    data = setup.encoded("train")
    _, targets, lengths = reference_pairs(data, setup.max_new_tokens, tok.eos_id, tok.pad_id)
    rows, _ = np.nonzero(data.reference_mask)  # the example of each pair, in reference_pairs' order
    example_index = torch.as_tensor(rows, dtype=torch.long)
    rewards = replay_rewards(setup, "train", example_index, targets, lengths)
    zeros = torch.zeros(targets.shape)
    return Trajectories.from_padded(
        targets,
        lengths,
        zeros,
        zeros,
        rewards,
        pad_id=tok.pad_id,
        prompt_table=torch.as_tensor(data.prompts, dtype=torch.int32),
        example_index=example_index,
        vocab_size=vocab_size,
    )


@torch.no_grad()
def replay_rewards(
    setup: EnvSetup, split: str, example_index: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """float ``[N, T]``: what the env pays at each step for the episodes ``tokens[i, :lengths[i]]`` of the
    examples ``example_index`` of ``split``: one :class:`TextGenVectorEnv` of N rows, one batched step per
    position (rows whose episode is over step with an action that is not scored, as rollouts do).

    :raises ValueError: when the env ends an episode before its last token (e.g. an eos inside it).
    """
    n, width = tokens.shape
    if n == 0:
        return torch.zeros(0, width)
    venv = TextGenVectorEnv(num_envs=n, split=split, output="torch", info_text=False, **setup.kwargs)
    venv.reset(options={"index": example_index.cpu().numpy()})
    ended_action = (tuple(setup.tokenizer.invalid_action_ids) or (setup.tokenizer.eos_id,))[0]
    rewards = torch.zeros(n, width)
    early = torch.zeros(n, dtype=torch.bool)
    for t in range(int(lengths.max())):
        playing = t < lengths
        reward, terminated, truncated = venv.step_tensors(torch.where(playing, tokens[:, t], ended_action))
        rewards[:, t] = torch.where(playing, reward.cpu().float(), 0.0)
        early |= playing & (t < lengths - 1) & (terminated | truncated).cpu()
    if bool(early.any()):
        row = int(early.nonzero()[0, 0])
        raise ValueError(
            f"the env ended episode {row} (example {int(example_index[row])}) before its last token: its "
            "tokens cannot be one episode (an eos or an invalid id inside it?)"
        )
    return rewards


def jsonl_trajectories(path: str | os.PathLike, setup: EnvSetup, vocab_size: int) -> Trajectories:
    """Episodes of a JSON Lines file, one ``{"prompt": str, "text": str, "reward": number}`` per line (blank
    lines skipped). Prompts are encoded as the env encodes its own (chat template included) and must fit
    its ``max_prompt_tokens``; a text becomes its tokens then eos, cut to ``max_new_tokens`` as the env
    would end the episode; the reward is paid at the episode's last step.

    :raises ValueError: naming the file, line and field, for a line that is not a JSON object, a missing
        field or a value of the wrong type, a non-finite reward, or a prompt too long for the env.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no JSON Lines file at {path}")
    wanted = ", ".join(f"{key} ({'number' if key == 'reward' else 'text'})" for key in JSONL_FIELDS)
    prompts, texts, rewards, line_numbers = [], [], [], []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where} is not valid JSON: {err}") from err
            if not isinstance(record, dict):
                raise ValueError(f"{where} is not a JSON object; each line needs the fields {wanted}")
            for key, kind in JSONL_FIELDS.items():
                if key not in record:
                    raise ValueError(f"{where} has no field {key!r}; each line needs the fields {wanted}")
                value = record[key]
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise ValueError(
                        f"{where}: field {key!r} must be a {'number' if key == 'reward' else 'string'}, got "
                        f"{type(value).__name__}"
                    )
            if not math.isfinite(record["reward"]):
                raise ValueError(f"{where}: field 'reward' must be finite, got {record['reward']}")
            prompts.append(record["prompt"])
            texts.append(record["text"])
            rewards.append(float(record["reward"]))
            line_numbers.append(number)
    tok = setup.tokenizer
    if setup.chat_template:
        prompts = [tok.apply_chat_template(p) for p in prompts]
    prompt_ids, text_ids = tok.encode_batch(prompts), tok.encode_batch(texts)
    invalid = set(tok.invalid_action_ids)
    for number, ids in zip(line_numbers, text_ids, strict=True):
        bad = [i for i in ids if i in invalid]
        if bad:
            raise ValueError(
                f"{path}, line {number}: field 'text' encodes to id {bad[0]}, which a policy can never "
                f"generate (the tokenizer's invalid ids {tuple(tok.invalid_action_ids)}: pad, bos, unk, "
                "e.g. a word outside its vocabulary); use words the env's tokenizer knows"
            )
    n, p, t = len(prompt_ids), setup.max_prompt_tokens, setup.max_new_tokens
    prompt_tensor = torch.full((n, p), tok.pad_id, dtype=torch.int32)
    tokens = torch.full((n, t), tok.pad_id, dtype=torch.long)
    lengths = torch.zeros(n, dtype=torch.long)
    for i, (ids, text) in enumerate(zip(prompt_ids, text_ids, strict=True)):
        if len(ids) > p:
            raise ValueError(
                f"{path}, line {line_numbers[i]}: the prompt has {len(ids)} tokens, more than the env's "
                f"max_prompt_tokens={p}; make the env with a larger max_prompt_tokens or shorten the prompt"
            )
        prompt_tensor[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.int32)
        episode = (list(text) + [tok.eos_id])[:t]
        tokens[i, : len(episode)] = torch.as_tensor(episode)
        lengths[i] = len(episode)
    last = (lengths - 1).clamp(min=0)
    step_rewards = torch.zeros(n, t).scatter_(1, last[:, None], torch.tensor(rewards).view(n, 1))
    zeros = torch.zeros(n, t)
    return Trajectories.from_padded(
        tokens,
        lengths,
        zeros,
        zeros,
        step_rewards,
        pad_id=tok.pad_id,
        prompts=prompt_tensor,
        vocab_size=vocab_size,
    )


# ---------------------------------------------------------------------------------------------- checks


def check_dataset(traj: Trajectories, policy: Any, name: str = "the offline data set") -> None:
    """Raise ValueError, saying what is wrong and what is allowed, unless ``traj`` can train ``policy``:

    at least one episode, each with at least one action and at most ``max_new_tokens``; action ids inside
    the vocabulary ``[0, vocab_size)`` and none the policy can never generate (``invalid_ids``); prompt ids
    inside the vocabulary (or the pad id), prompts at most ``max_prompt_tokens`` wide; the tokenizer's pad
    id; finite rewards. One pass over the packed arrays (a few host reads in all)."""
    what = f"the offline data set ({name})"
    if traj.num_episodes == 0:
        raise ValueError(
            f"{what} holds no trajectories; give at least one episode (e.g. dataset=None for the task's "
            "training references)"
        )
    vocab, tok = policy.vocab_size, policy.tokenizer
    if traj.pad_id != tok.pad_id:
        raise ValueError(
            f"{what} pads with id {traj.pad_id} but the policy's tokenizer pads with {tok.pad_id}: it was "
            "made with another tokenizer"
        )
    lengths = traj.lengths.cpu()
    short = lengths < 1
    if bool(short.any()):
        raise ValueError(
            f"{what}: episode {int(short.nonzero()[0, 0])} has no actions; every episode needs one"
        )
    if traj.width > policy.max_new_tokens:
        row = int((lengths > policy.max_new_tokens).nonzero()[0, 0])
        raise ValueError(
            f"{what}: episode {row} has {int(lengths[row])} actions; the policy's env allows at most "
            f"max_new_tokens={policy.max_new_tokens}"
        )
    tokens = traj.step_tokens.cpu().long()
    invalid = torch.zeros(max(vocab, 1), dtype=torch.bool)
    invalid[[i for i in policy.invalid_ids if 0 <= i < vocab]] = True
    outside = (tokens < 0) | (tokens >= vocab)
    cannot = ~outside & invalid[tokens.clamp(0, vocab - 1)]
    for bad, why in (
        (outside, f"outside the policy's vocabulary: action ids must be in [0, {vocab})"),
        (
            cannot,
            f"one the policy can never generate (its invalid ids {tuple(policy.invalid_ids)}, e.g. pad, bos, "
            f"unk): actions must be ids in [0, {vocab}) other than those",
        ),
    ):
        if bool(bad.any()):
            step = int(bad.nonzero()[0, 0])
            episode = int(torch.searchsorted(lengths.cumsum(0), step, right=True))
            position = step - int(lengths[:episode].sum())
            raise ValueError(
                f"{what} holds action id {int(tokens[step])} (episode {episode}, step {position}), {why}"
            )
    prompts = traj.prompts.cpu().long()
    if prompts.shape[1] > policy.max_prompt_tokens:
        raise ValueError(
            f"{what} has prompts {prompts.shape[1]} tokens wide; the policy's env allows max_prompt_tokens="
            f"{policy.max_prompt_tokens}"
        )
    bad = ((prompts < 0) | (prompts >= vocab)) & (prompts != tok.pad_id)
    if bool(bad.any()):
        episode, column = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{what} holds prompt id {int(prompts[episode, column])} (episode {episode}, position {column}), "
            f"outside the policy's vocabulary: prompt ids must be in [0, {vocab}) or the pad id {tok.pad_id}"
        )
    if not bool(torch.isfinite(traj.step_rewards).all()):
        raise ValueError(
            f"{what} holds rewards that are not finite (nan or inf); rewards must be finite numbers"
        )
