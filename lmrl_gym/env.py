"""``TextGenEnv``: text generation as a Gymnasium environment, one token per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from lmrl_gym.env_setup import EnvSetup, episode_example_index

ENV_ARGUMENTS = (
    "task",
    "split",
    "reward",
    "max_new_tokens",
    "max_prompt_tokens",
    "invalid_action_penalty",
    "shaping",
    "sampling",
    "strict_prompt_length",
    "task_kwargs",
    "reward_model",
    "render_mode",
    "tokenizer",
    "num_actions",
    "eos_token_ids",
    "chat_template",
)

# rgb_array frames: a fixed size (video recorders need one), text in a monospace font, wrapped and cut.
FRAME_WIDTH, FRAME_HEIGHT, FRAME_DPI = 640, 360, 100
FRAME_COLUMNS, FRAME_LINES = 88, 21


def make_observation_space(setup: EnvSetup) -> spaces.Dict:
    # The word tokenizer pads with id 0; a Hugging Face tokenizer with an id one past the action space.
    high = max(setup.tokenizer.vocab_size - 1, setup.tokenizer.pad_id)
    return spaces.Dict(
        {
            "prompt_ids": spaces.Box(0, high, shape=(setup.max_prompt_tokens,), dtype=np.int32),
            "prefix_ids": spaces.Box(0, high, shape=(setup.max_new_tokens,), dtype=np.int32),
        }
    )


def check_action(action: Any, vocab_size: int) -> int:
    """``action`` as a Python int, or ValueError if it is not an integer id in ``[0, vocab_size)``."""
    if isinstance(action, (np.ndarray, torch.Tensor)) and action.ndim == 0:
        action = action.item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise ValueError(
            f"action must be an integer token id in [0, {vocab_size}), got {action!r} ({type(action).__name__})"
        )
    if not 0 <= action < vocab_size:
        raise ValueError(f"action {int(action)} is outside the action space Discrete({vocab_size})")
    return int(action)


def check_env_index(env_index: Any, num_envs: Any) -> tuple[int, int]:
    """``(env_index, num_envs)`` as ints, or ValueError unless ``0 <= env_index < num_envs``."""
    for name, value in (("env_index", env_index), ("num_envs", num_envs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= env_index < num_envs:
        raise ValueError(f"need 0 <= env_index < num_envs, got env_index={env_index}, num_envs={num_envs}")
    return int(env_index), int(num_envs)


def text_frame(text: str) -> np.ndarray:
    """``text`` drawn as an RGB image: uint8 ``[FRAME_HEIGHT, FRAME_WIDTH, 3]``, black monospace text on
    white, lines wrapped at ``FRAME_COLUMNS`` characters and cut after ``FRAME_LINES`` lines (matplotlib's
    Agg canvas, imported on first use: no display needed)."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = []
    for line in text.splitlines() or [""]:
        lines.extend(
            textwrap.wrap(line, FRAME_COLUMNS, replace_whitespace=False, drop_whitespace=False) or [""]
        )
    if len(lines) > FRAME_LINES:
        lines = [*lines[: FRAME_LINES - 1], "..."]
    figure = Figure(
        figsize=(FRAME_WIDTH / FRAME_DPI, FRAME_HEIGHT / FRAME_DPI), dpi=FRAME_DPI, facecolor="white"
    )
    canvas = FigureCanvasAgg(figure)
    # Drawn as text, not parsed as mathtext: "$" in a generated text must not fail the render.
    figure.text(
        0.01, 0.98, "\n".join(lines), family="monospace", size=9, va="top", usetex=False, parse_math=False
    )
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def reject_unknown_arguments(kwargs: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    if kwargs:
        raise ValueError(f"unknown argument(s) {sorted(kwargs)}; valid arguments: {list(valid)}")


class TextGenEnv(gym.Env):
    """Generate text one token at a time, rewarded by BLEU, an LM score, or any function you plug in.

    ## Description

    Each episode picks one example of a task (a prompt and one or more references) and lets the agent write
    a continuation token by token. A *token* is a word or a character of the task's tokenizer, built from
    the training split, or, with ``tokenizer=``, a subword of a Hugging Face tokenizer (GPT-2's, T5's,
    ...: what a pretrained ``transformers`` model reads and writes); ``env.unwrapped.tokenizer`` either way.
    Built-in tasks: ``lmrl_gym.list_tasks()``; your own data: a list of examples, a JSON Lines / CSV file,
    a ``datasets.Dataset`` / ``DatasetDict``, ``"hf:NAME"`` or a ``save_to_disk`` folder passed as ``task``.

    ## Action Space

    ``Discrete(vocab_size)``: the id of the next token. ``eos`` ends the episode. ``pad``, ``bos`` and ``unk``
    can never be generated: ``action_masks()`` and ``info["action_mask"]`` mark them 0, and taking one ends
    the episode with ``invalid_action_penalty`` and ``info["invalid_action"] = True`` (the prefix is left
    as it was). An id outside ``[0, vocab_size)`` raises ``ValueError``.

    With a Hugging Face tokenizer ``vocab_size`` is ``len(tokenizer)``, or ``num_actions`` when the model
    has more logits than the tokenizer has tokens (T5, Qwen); invalid are the ids the tokenizer cannot
    decode (``>= len(tokenizer)``) and every special token except those that end a text: the eos ids
    (``tokenizer.eos_ids``: the tokenizer's eos, the ``eos_token_id`` list of a ``generation_config.json``
    in the tokenizer's folder, and ``eos_token_ids``), any of which ends the episode.

    ## Observation Space

    ``Dict(prompt_ids=Box(int32, (max_prompt_tokens,)), prefix_ids=Box(int32, (max_new_tokens,)))``: the
    prompt's ids and the ids generated so far (eos included once taken), each right-padded with
    ``tokenizer.pad_id``, which never occurs inside a sequence, so ``(ids != pad_id).sum(-1)`` is a length.
    The word tokenizer's pad id is 0. A Hugging Face tokenizer's is ``vocab_size``, an id of the env's own,
    one past the action space (the Box's ``high``), whether or not the tokenizer has a pad token: eos as
    pad (GPT-2 has no pad) would be ambiguous, since eos can occur inside a prompt (a chat template, a
    literal ``<|endoftext|>``) and ends every finished prefix; the tokenizer's own pad token is a special
    token text could contain. Being outside the model's vocabulary, the pad id never reaches the model: a
    policy replaces it and masks it (one that forgot would fail on the embedding lookup, not attend to a
    real token). With ``chat_template=True`` the prompt is the user turn of the tokenizer's chat template
    followed by its generation prompt.

    ## Rewards

    The ``reward`` argument: ``"bleu"`` (sentence BLEU against the references, sacreBLEU's number on the
    ids, scaled to [0, 1]; on a Hugging Face tokenizer, on the decoded text split into sacreBLEU's 13a
    words, i.e. ``sacrebleu.sentence_bleu(text, references).score / 100``), ``"exact_match"``, ``"lm"`` (log-probability of each token under a Kneser-Ney
    model of the training references, natural log), ``"learned"`` (a reward network, e.g. from inverse RL,
    given as ``reward_model``; paid per token), a :class:`lmrl_gym.rewards.Reward`, a Python function
    ``fn(text, references, prompt) -> float`` (``text`` decoded, special tokens skipped), or a
    ``{reward: weight}`` mapping. Sequence rewards are paid
    at the last step, token rewards at every step; with ``shaping=True`` sequence rewards are paid as the
    per-step difference of the score of the prefix, which sums to the final score. An invalid action pays
    ``invalid_action_penalty`` in place of the sequence reward (with shaping: minus what was already paid).

    ## Starting State

    An example of ``split`` chosen from the reset seed and the episode count (``sampling="random"``: i.i.d.
    uniform; ``"sequential"``: rows ``seed + k * num_envs`` mod ``num_examples`` for episode k), or the one
    given by ``reset(options={"index": i})``. The prefix is empty.

    ## Episode End

    Terminated when the agent takes ``eos`` or an invalid id, or when it has written ``max_new_tokens``
    tokens. The cut-off is a terminal state, not a time limit: nothing can be earned after it and the prefix
    length is part of the observation, so an agent must not bootstrap a value there (reported as
    ``truncated``, Stable-Baselines3 would add ``gamma * V(last obs)`` to the last reward). It is flagged
    with ``info["length_limit"] = True``. ``truncated`` is always False (a ``TimeLimit`` wrapper added by
    the user may still set it). The last step's ``info`` has ``"text"`` (decoded, eos excluded),
    ``"references"``, ``"prompt"``, ``"reward_components"`` (each component's value for the episode:
    token rewards summed), ``"invalid_action"``, ``"length_limit"`` and ``"example_index"``.

    ## Arguments

    - ``task``: built-in name (default ``"numbers"``), a ``Task``, a list of examples, a file path, a
      ``datasets.Dataset`` / ``DatasetDict``, ``"hf:NAME"`` / ``"hf:NAME:CONFIG"``
      (``datasets.load_dataset``) or a folder written by ``save_to_disk`` (see
      :func:`lmrl_gym.tasks.make_dataset_task`). Data without references (prompt-only) needs
      ``max_new_tokens`` and a reward that reads no references.
    - ``task_kwargs``: keyword arguments of the task builder, e.g. ``{"num_symbols": 6}``; for a data set
      ``{"prompt_column": ..., "reference_column": ...}``.
    - ``tokenizer``: None (the task's word tokenizer), or a ``transformers`` tokenizer, a local folder or
      a hub name (``AutoTokenizer.from_pretrained``), wrapped as :class:`lmrl_gym.HFTokenizer`. Prompts
      and references are encoded with it, no special tokens added.
    - ``num_actions``: the action-space size with a Hugging Face tokenizer, at least ``len(tokenizer)``
      (default): the model's output size where it has more logits than tokens.
    - ``eos_token_ids``: more ids (ints or token strings) that end the episode, e.g. a chat model's
      end-of-turn token (for now the way to give a task's end-of-turn token).
    - ``chat_template``: wrap each prompt in the Hugging Face tokenizer's chat template (instruction-tuned
      models); an error for a tokenizer without one.
    - ``reward_model``: the model of ``reward="learned"``: a file written by ``RewardNetwork.save`` /
      ``agents.IRL`` or a :class:`lmrl_gym.rewards.RewardNetwork`.
    - ``split``: ``"train"`` | ``"validation"`` | ``"test"``.
    - ``reward``: see Rewards (default ``"bleu"``).
    - ``max_new_tokens``: episode length limit (default: longest reference in the task + 1).
    - ``max_prompt_tokens``: prompt width (default: longest prompt in the task, capped at a Hugging Face
      tokenizer's ``model_max_length``; more than that is an error). Longer prompts keep their first
      tokens, with a warning, or raise ``ValueError`` when ``strict_prompt_length=True``.
    - ``invalid_action_penalty``: reward for taking pad / bos / unk (default -1.0).
    - ``shaping``, ``sampling``: see Rewards and Starting State.
    - ``env_index``, ``num_envs``: this env's place among ``num_envs`` envs played side by side (defaults
      0 and 1). A vector env, or a ``SyncVectorEnv`` built by hand, seeds env i with ``seed + i``; with
      ``sampling="sequential"`` env i then walks rows ``seed + i + k * num_envs``, so the envs together
      visit consecutive rows instead of replaying each other's one episode apart.
      ``TextGenVectorEnv`` passes both itself.
    - ``render_mode``: ``"ansi"`` (a string), ``"rgb_array"`` (that string drawn as an RGB image, 360 x 640:
      what Stable-Baselines3 asks for when given an id string, and what video recorders read) or None.

    ## Vectorized environment

    ``gym.make_vec(id, num_envs=N)`` returns :class:`lmrl_gym.TextGenVectorEnv`: the same episodes for the
    same seeds as ``SyncVectorEnv`` of this env (autoreset ``SAME_STEP``), computed as batched tensors.

    ## Version History

    - v0: initial version.
    - v0 (issue 10): reaching ``max_new_tokens`` is ``terminated`` with ``info["length_limit"] = True``
      (was ``truncated``); ``env_index`` / ``num_envs`` arguments, so sequential sampling over several
      envs no longer replays rows.
    - v0 (issue 11): ``tokenizer``, ``num_actions``, ``eos_token_ids`` and ``chat_template`` arguments (Hugging
      Face tokenizers; BLEU on text for them); ``task`` takes Hugging Face data sets and prompt-only data;
      ``render_mode="rgb_array"``. Word-tokenizer episodes are unchanged.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
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
        render_mode: str | None = None,
        env_index: int = 0,
        num_envs: int = 1,
        tokenizer: Any = None,
        num_actions: int | None = None,
        eos_token_ids: Any = None,
        chat_template: bool = False,
        **unknown: Any,
    ) -> None:
        reject_unknown_arguments(unknown, (*ENV_ARGUMENTS, "env_index", "num_envs"))
        self.env_index, self.num_envs = check_env_index(env_index, num_envs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']}")
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
            tokenizer=tokenizer,
            num_actions=num_actions,
            eos_token_ids=eos_token_ids,
            chat_template=chat_template,
        )
        self.render_mode = render_mode
        self.tokenizer = self.setup.tokenizer
        self.task = self.setup.task
        self.observation_space = make_observation_space(self.setup)
        self.action_space = spaces.Discrete(self.tokenizer.vocab_size)
        self._seed_key: int | None = None
        self._episode_count = 0
        self._done: bool | None = None  # None: never reset
        self._prefix = np.zeros(self.setup.max_new_tokens, dtype=np.int32)
        self._length = 0
        self._example_index = 0

    @property
    def num_examples(self) -> int:
        """Number of examples in this env's split."""
        return len(self.setup.data)

    def action_masks(self) -> np.ndarray:
        """bool ``[vocab_size]``: True for ids that may be generated (sb3-contrib MaskablePPO convention)."""
        return self.setup.action_mask.astype(bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed_key, self._episode_count = int(seed), 0
        elif self._seed_key is None:
            self._seed_key, self._episode_count = int(self.np_random.integers(2**63)), 0
        else:
            self._episode_count += 1
        index = (options or {}).get("index")
        if index is None:
            index = int(
                episode_example_index(
                    np.array([self._seed_key], dtype=np.uint64),
                    np.array([self._episode_count], dtype=np.uint64),
                    self.num_examples,
                    self.setup.sampling,
                    self.num_envs,
                )[0]
            )
        elif (
            isinstance(index, bool)
            or not isinstance(index, (int, np.integer))
            or not (0 <= index < self.num_examples)
        ):
            raise ValueError(
                f"options['index'] must be an integer in [0, {self.num_examples}), got {index!r}"
            )
        self._example_index = int(index)
        self._prefix[:] = self.tokenizer.pad_id
        self._length = 0
        self._done = False
        self._shaped_so_far = 0.0
        self._token_totals = {r.name: 0.0 for r, _ in self.setup.pipeline.token_components}
        info = {"action_mask": self.setup.action_mask.copy(), "example_index": self._example_index}
        return self._observation(), info

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "prompt_ids": self.setup.data.prompts[self._example_index].copy(),
            "prefix_ids": self._prefix.copy(),
        }

    def _reward_batch(self, ended_with_eos: bool):
        content = self._length - int(ended_with_eos)
        generated = torch.as_tensor(self._prefix, dtype=torch.long)[None, :].clone()
        generated[:, content:] = self.tokenizer.pad_id
        return self.setup.reward_batch(
            torch.tensor([self._example_index]),
            generated,
            torch.tensor([content]),
            torch.tensor([ended_with_eos]),
        )

    def step(self, action: Any):
        if self._done is None:
            raise ResetNeeded("cannot call step() before reset()")
        if self._done:
            raise ResetNeeded("the episode has ended (terminated or truncated); call reset() before step()")
        token = check_action(action, self.tokenizer.vocab_size)
        setup = self.setup
        pipeline = setup.pipeline
        info: dict[str, Any] = {"action_mask": setup.action_mask.copy()}
        components: dict[str, float] = {}
        if setup.action_mask[token] == 0:
            reward = setup.invalid_action_penalty - self._shaped_so_far
            terminated, truncated, invalid, length_limit, eos = True, False, True, False, False
            components["invalid_action_penalty"] = setup.invalid_action_penalty
        else:
            invalid = False
            eos = token in setup.eos_ids
            self._prefix[self._length] = token
            self._length += 1
            length_limit = not eos and self._length >= setup.max_new_tokens
            terminated = eos or length_limit
            truncated = False
            token_part = sequence_part = 0.0
            if pipeline.has_token_rewards or pipeline.shaping or terminated or truncated:
                batch = self._reward_batch(eos)
                if pipeline.has_token_rewards:
                    total, values = pipeline.token_rewards(batch)
                    token_part = total.item()
                    for name, value in values.items():
                        self._token_totals[name] += value.item()
                if pipeline.shaping or terminated or truncated:
                    total, values = pipeline.sequence_rewards(batch)
                    sequence_part = total.item() - self._shaped_so_far
                    self._shaped_so_far = total.item() if pipeline.shaping else 0.0
                    components.update({name: value.item() for name, value in values.items()})
            reward = token_part + sequence_part
        if terminated or truncated:
            self._done = True
            components.update(self._token_totals)
            example = setup.data.examples[self._example_index]
            content = self._prefix[: self._length - int(eos)]
            info.update(
                text=self.tokenizer.decode(content),
                references=list(example.references),
                prompt=example.prompt,
                reward_components=components,
                invalid_action=invalid,
                length_limit=length_limit,
                example_index=self._example_index,
            )
        return self._observation(), float(reward), terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: the prompt, the text so far and the references as a string; ``"rgb_array"``: that
        string drawn as an RGB uint8 image ``[360, 640, 3]``; None without a render mode."""
        if self.render_mode is None:
            return None
        text = self._render_text()
        return text if self.render_mode == "ansi" else text_frame(text)

    def _render_text(self) -> str:
        if self._done is None:
            return "(call reset() first)"
        example = self.setup.data.examples[self._example_index]
        ids = self._prefix[: self._length]
        if self.setup.is_hf:  # subword pieces are not words: show the text, special tokens written out
            text = self.tokenizer.decode(ids, skip_special=False)
        else:
            text = " ".join(self.tokenizer.id_to_token[i] for i in ids)
        return f"prompt:     {example.prompt}\ngenerated:  {text}\nreferences: {' | '.join(example.references)}\n"
