"""``TextGenVectorEnv``: N text-generation episodes stepped together as tensor operations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lmrl_gym.env import ENV_ARGUMENTS, make_observation_space, reject_unknown_arguments
from lmrl_gym.env_setup import EnvSetup, episode_example_index

OUTPUT_FORMATS = ("numpy", "torch")


class TextGenVectorEnv(VectorEnv):
    """``num_envs`` :class:`~lmrl_gym.TextGenEnv` episodes in lock-step, all state in tensors on ``device``.

    Same arguments, spaces, rewards and episodes as ``TextGenEnv``; for the same seeds and actions it returns
    exactly what ``gymnasium.vector.SyncVectorEnv([TextGenEnv(...)] * N, autoreset_mode=SAME_STEP)``
    returns (observations, rewards, terminations, truncations). Each step is a handful of batched tensor
    operations; the rewards of the episodes that end in a step are computed as one batch. A reward on text
    (BLEU on a Hugging Face tokenizer, a Python function of the text) decodes each ended episode once, in
    that step; with ``shaping=True`` it scores every row's text at every step.

    Autoreset is ``SAME_STEP`` (``metadata["autoreset_mode"]``): an episode that ends is reset within the
    same step; the returned observation is the new episode's and ``infos["final_obs"]`` /
    ``infos["final_info"]`` (with masks ``"_final_obs"`` / ``"_final_info"``) hold the ended one's, as
    SyncVectorEnv lays them out (an object array of observations; a dict of arrays).

    :param num_envs: number of parallel episodes.
    :param device: where the state and rewards live (``"cpu"``, ``"cuda"``, ...).
    :param output: ``"numpy"`` (default, Gymnasium convention) or ``"torch"`` (tensors on ``device``, no copy
        to the host: for agents that run on the same device).
    :param info_text: decode ``final_info["text"]`` of ended episodes (one decode per ended episode; agents
        that do not read it set False).
    :param max_episode_steps: accepted for ``gym.make_vec``; an alias of ``max_new_tokens``.
    Other arguments: see :class:`~lmrl_gym.TextGenEnv`.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        task: Any = "numbers",
        split: str = "train",
        reward: Any = "bleu",
        max_new_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
        invalid_action_penalty: float = -1.0,
        shaping: bool = False,
        sampling: str = "random",
        strict_prompt_length: bool = False,
        task_kwargs: Mapping[str, Any] | None = None,
        reward_model: Any = None,
        device: str | torch.device = "cpu",
        output: str = "numpy",
        info_text: bool = True,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        tokenizer: Any = None,
        num_actions: int | None = None,
        eos_token_ids: Any = None,
        chat_template: bool = False,
        **unknown: Any,
    ) -> None:
        reject_unknown_arguments(
            unknown, (*ENV_ARGUMENTS, "num_envs", "device", "output", "info_text", "max_episode_steps")
        )
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if output not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output {output!r}; valid: {list(OUTPUT_FORMATS)}")
        if render_mode is not None:
            raise ValueError("TextGenVectorEnv has no render modes; render a single TextGenEnv instead")
        if max_new_tokens is None and max_episode_steps is not None:
            max_new_tokens = max_episode_steps
        self.setup = EnvSetup(
            task=task,
            split=split,
            reward=reward,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            invalid_action_penalty=invalid_action_penalty,
            shaping=shaping,
            sampling=sampling,
            strict_prompt_length=strict_prompt_length,
            task_kwargs=task_kwargs,
            reward_model=reward_model,
            device=device,
            tokenizer=tokenizer,
            num_actions=num_actions,
            eos_token_ids=eos_token_ids,
            chat_template=chat_template,
        )
        self.num_envs = int(num_envs)
        self.device = self.setup.device
        self.output = output
        self.info_text = info_text
        self.render_mode = None
        self.tokenizer = self.setup.tokenizer
        self.task = self.setup.task
        self.single_observation_space = make_observation_space(self.setup)
        self.single_action_space = spaces.Discrete(self.tokenizer.vocab_size)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n, dev = self.num_envs, self.device
        self._seed_keys: np.ndarray | None = None
        self._episode_counts = np.zeros(n, dtype=np.uint64)
        self._example_index = torch.zeros(n, dtype=torch.long, device=dev)
        self._prompts = torch.zeros(n, self.setup.max_prompt_tokens, dtype=torch.int32, device=dev)
        self._prefix = torch.zeros(n, self.setup.max_new_tokens, dtype=torch.int32, device=dev)
        self._length = torch.zeros(n, dtype=torch.long, device=dev)
        self._shaped_so_far = torch.zeros(n, dtype=torch.float64, device=dev)
        self._token_totals = {
            r.name: torch.zeros(n, dtype=torch.float64, device=dev)
            for r, _ in self.setup.pipeline.token_components
        }
        self._rows = torch.arange(n, device=dev)
        self._positions = torch.arange(self.setup.max_new_tokens, device=dev)
        self._was_reset = False

    @property
    def num_examples(self) -> int:
        return len(self.setup.data)

    @property
    def example_index(self) -> torch.Tensor:
        """int64 ``[num_envs]``: the split row (index into ``setup.tensors``) of each env's current episode."""
        return self._example_index

    def action_masks(self) -> np.ndarray:
        """bool ``[num_envs, vocab_size]``: True for ids that may be generated."""
        return np.broadcast_to(
            self.setup.action_mask.astype(bool), (self.num_envs, self.tokenizer.vocab_size)
        )

    # ------------------------------------------------------------------ reset

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        """Start a new episode in every env.

        ``seed``: an int (env i is seeded ``seed + i``, as ``SyncVectorEnv`` does), a list of ``num_envs``
        ints, or None (continue each env's sequence of examples, or draw seeds on the first reset).
        ``options={"index": ints}``: the example row for each env (``num_envs`` ints).
        """
        super().reset(seed=seed if isinstance(seed, int) else None)
        n = self.num_envs
        if seed is not None:
            seeds = [seed + i for i in range(n)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != n:
                raise ValueError(f"reset got {len(seeds)} seeds for {n} envs; pass one int or {n} ints")
            self._seed_keys = np.array(seeds, dtype=np.uint64)
            self._episode_counts[:] = 0
        elif self._seed_keys is None:
            self._seed_keys = self.np_random.integers(2**63, size=n, dtype=np.int64).astype(np.uint64)
            self._episode_counts[:] = 0
        else:
            self._episode_counts += np.uint64(1)
        index = (options or {}).get("index")
        if index is None:
            rows = episode_example_index(
                self._seed_keys, self._episode_counts, self.num_examples, self.setup.sampling, self.num_envs
            )
        else:
            rows = np.asarray(index)
            if (
                rows.shape != (n,)
                or rows.dtype.kind not in "iu"
                or rows.min() < 0
                or rows.max() >= self.num_examples
            ):
                raise ValueError(
                    f"options['index'] must be {n} integers in [0, {self.num_examples}), got {index!r}"
                )
        self._start_episodes(self._rows, torch.as_tensor(rows, dtype=torch.long, device=self.device))
        self._was_reset = True
        return self._observation(), {}

    def _start_episodes(self, envs: torch.Tensor, rows: torch.Tensor) -> None:
        self._example_index[envs] = rows
        self._prompts[envs] = self.setup.tensors["prompts"][rows].int()
        self._prefix[envs] = self.tokenizer.pad_id
        self._length[envs] = 0
        self._shaped_so_far[envs] = 0.0
        for totals in self._token_totals.values():
            totals[envs] = 0.0

    def _observation(self) -> dict[str, np.ndarray | torch.Tensor]:
        obs = {"prompt_ids": self._prompts.clone(), "prefix_ids": self._prefix.clone()}
        if self.output == "numpy":
            return {k: v.cpu().numpy() for k, v in obs.items()}
        return obs

    # ------------------------------------------------------------------- step

    def _reward_batch(self, envs: torch.Tensor, ended_with_eos: torch.Tensor):
        """Reward batch for ``envs``; eos (when just taken) is stripped from the generated ids."""
        length = self._length[envs] - ended_with_eos.long()
        generated = self._prefix[envs].long()
        generated = generated.masked_fill(self._positions[None, :] >= length[:, None], self.tokenizer.pad_id)
        return self.setup.reward_batch(self._example_index[envs], generated, length, ended_with_eos)

    def step(self, actions: Any):
        rewards, terminated, truncated, infos = self._advance(actions, with_infos=True)
        if self.output == "numpy":
            return (
                self._observation(),
                rewards.cpu().numpy(),
                terminated.cpu().numpy(),
                truncated.cpu().numpy(),
                infos,
            )
        return self._observation(), rewards, terminated, truncated, infos

    def step_tensors(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance exactly as :meth:`step` (same rewards, terminations and autoresets) but return only
        ``(rewards, terminated, truncated)`` as tensors on ``device``: no observation copy and no
        ``final_obs`` / ``final_info`` (built per ended episode) for agents that read neither."""
        rewards, terminated, truncated, _ = self._advance(actions, with_infos=False)
        return rewards, terminated, truncated

    def _advance(self, actions: Any, with_infos: bool):
        if not self._was_reset:
            raise ResetNeeded("cannot call step() before reset()")
        setup, pipeline = self.setup, self.setup.pipeline
        actions = self._check_actions(actions)
        invalid = setup.action_is_invalid[actions]
        valid = ~invalid
        eos = valid & setup.action_is_eos[actions]
        # Append the token of every valid action; invalid actions leave the prefix untouched.
        append_at = self._length.clamp(max=setup.max_new_tokens - 1)
        current = self._prefix[self._rows, append_at]
        self._prefix[self._rows, append_at] = torch.where(valid, actions.int(), current)
        self._length += valid.long()
        # The cut-off is terminal (see TextGenEnv, Episode End): truncated stays all False.
        length_limit = valid & ~eos & (self._length >= setup.max_new_tokens)
        terminated = invalid | eos | length_limit
        truncated = torch.zeros_like(terminated)
        done = terminated

        token_part = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
        sequence_part = torch.zeros_like(token_part)
        components: dict[str, torch.Tensor] = {}
        if pipeline.has_token_rewards:
            total, values = pipeline.token_rewards(self._reward_batch(self._rows, eos))
            token_part = total
            for name, value in values.items():
                self._token_totals[name] += torch.where(valid, value, torch.zeros_like(value))
        if pipeline.shaping:
            total, values = pipeline.sequence_rewards(self._reward_batch(self._rows, eos))
            sequence_part = total - self._shaped_so_far
            self._shaped_so_far = torch.where(valid, total, self._shaped_so_far)
            components = values
        else:
            scored = (done & valid).nonzero()[:, 0]
            if len(scored):
                total, values = pipeline.sequence_rewards(self._reward_batch(scored, eos[scored]))
                sequence_part[scored] = total
                for name, value in values.items():
                    components[name] = torch.zeros_like(token_part).index_put_((scored,), value)
        rewards = torch.where(
            invalid, setup.invalid_action_penalty - self._shaped_so_far, token_part + sequence_part
        )

        infos: dict[str, Any] = {}
        if bool(done.any()):
            if with_infos:
                infos = self._final_infos(done, invalid, eos, length_limit, components)
            ended = done.nonzero()[:, 0]
            ended_np = ended.cpu().numpy()
            self._episode_counts[ended_np] += np.uint64(1)
            rows = episode_example_index(
                self._seed_keys[ended_np],
                self._episode_counts[ended_np],
                self.num_examples,
                setup.sampling,
                self.num_envs,
            )
            self._start_episodes(ended, torch.as_tensor(rows, dtype=torch.long, device=self.device))
        return rewards, terminated, truncated, infos

    def _check_actions(self, actions: Any) -> torch.Tensor:
        vocab = self.tokenizer.vocab_size
        if isinstance(actions, torch.Tensor):
            tensor = actions.to(self.device)
        else:
            array = np.asarray(actions)
            if array.dtype.kind not in "iu":
                raise ValueError(f"actions must be integer token ids, got dtype {array.dtype}")
            tensor = torch.as_tensor(array, device=self.device)
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.shape != (self.num_envs,):
            raise ValueError(
                f"actions must be {self.num_envs} integer token ids (shape ({self.num_envs},)), got "
                f"dtype {tensor.dtype} and shape {tuple(tensor.shape)}"
            )
        tensor = tensor.long()
        out_of_range = (tensor < 0) | (tensor >= vocab)
        if bool(out_of_range.any()):
            env = int(out_of_range.nonzero()[0, 0])
            raise ValueError(
                f"action {int(tensor[env])} of env {env} is outside the action space Discrete({vocab})"
            )
        return tensor

    def _final_infos(self, done, invalid, eos, length_limit, components) -> dict[str, Any]:
        """Gymnasium's SAME_STEP layout: ``final_obs`` an object array, ``final_info`` a dict of arrays."""
        done_np = done.cpu().numpy()
        n = self.num_envs
        arrays = {
            k: v.cpu().numpy() for k, v in (("prompt_ids", self._prompts), ("prefix_ids", self._prefix))
        }
        # Gymnasium's SyncVectorEnv layout: an object array holding each ended env's observation, else None.
        final_obs = np.full(n, None, dtype=object)
        for i in np.flatnonzero(done_np):
            final_obs[i] = {k: v[i].copy() for k, v in arrays.items()}
        comps: dict[str, Any] = {}
        for name, value in components.items():
            comps[name] = np.where(done_np & ~invalid.cpu().numpy(), value.cpu().numpy(), 0.0)
            comps["_" + name] = done_np & ~invalid.cpu().numpy()
        for name, value in self._token_totals.items():
            comps[name] = np.where(done_np, value.cpu().numpy(), 0.0)
            comps["_" + name] = done_np
        comps["invalid_action_penalty"] = np.where(
            invalid.cpu().numpy(), self.setup.invalid_action_penalty, 0.0
        )
        comps["_invalid_action_penalty"] = invalid.cpu().numpy()
        example_index = self._example_index.cpu().numpy()
        final_info: dict[str, Any] = {
            "reward_components": comps,
            "_reward_components": done_np,
            "invalid_action": invalid.cpu().numpy() & done_np,
            "_invalid_action": done_np,
            "length_limit": length_limit.cpu().numpy() & done_np,
            "_length_limit": done_np,
            "example_index": np.where(done_np, example_index, 0),
            "_example_index": done_np,
        }
        if self.info_text:
            texts = np.full(n, None, dtype=object)
            content = (self._length - (eos & ~invalid).long()).cpu().numpy()
            prefix = arrays["prefix_ids"]
            examples = self.setup.data.examples
            for i in np.flatnonzero(
                done_np
            ):  # strings are per episode by nature; agents pass info_text=False
                texts[i] = self.tokenizer.decode(prefix[i, : content[i]])
            final_info["text"] = texts
            final_info["_text"] = done_np
            final_info["references"] = np.array(
                [
                    list(examples[j].references) if d else None
                    for j, d in zip(example_index, done_np, strict=True)
                ],
                dtype=object,
            )
            final_info["_references"] = done_np
        return {
            "final_obs": final_obs,
            "_final_obs": done_np,
            "final_info": final_info,
            "_final_info": done_np,
        }
