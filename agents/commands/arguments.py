"""Argument types and the env arguments shared by the applications (``lmrl-gym`` train / eval / irl /
bench, the demo): each invalid value becomes argparse's exit code 2 with a one-line message."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

import lmrl_gym  # noqa: F401  (registers the TextGen ids that --env offers)
from lmrl_gym.env import ENV_ARGUMENTS
from lmrl_gym.rewards import list_rewards


def env_ids() -> list[str]:
    """The registered TextGen environment ids (the valid values of ``--env``)."""
    return [env_id for env_id in gym.registry if env_id.startswith("TextGen")]


# ---------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0 (argparse turns the error into exit code 2 with the message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return value


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object, e.g. ``'{"num_symbols": 6, "min_length": 3}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r} ({err.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


@dataclass(frozen=True)
class PolicyChoice:
    """The value of ``--policy``: ``kind`` ``"transformer"`` (our :class:`~agents.TransformerPolicy`, built
    for the env) or ``"hf"`` (:class:`~agents.policies.hf.HFPolicy`); ``name``: the ``transformers`` model's
    local folder or hub name (``"hf"`` only)."""

    kind: str
    name: str | None = None


# "TransformerPolicy" is the Stable-Baselines3-style alias the flag took before "hf:" existed.
TRANSFORMER_POLICY_NAMES = ("transformer", "TransformerPolicy")
HF_POLICY_PREFIX = "hf:"


def policy_choice(text: str) -> PolicyChoice:
    """An argparse type: ``transformer`` (or ``TransformerPolicy``), or ``hf:PATH_OR_NAME`` (a
    ``transformers`` causal or encoder-decoder model by local folder or hub name)."""
    if text in TRANSFORMER_POLICY_NAMES:
        return PolicyChoice("transformer")
    if text.startswith(HF_POLICY_PREFIX) and text[len(HF_POLICY_PREFIX) :].strip():
        return PolicyChoice("hf", text[len(HF_POLICY_PREFIX) :])
    raise argparse.ArgumentTypeError(
        f"must be 'transformer' (our transformer, built for the env) or 'hf:PATH_OR_NAME' (a transformers "
        f"model by local folder or hub name, e.g. hf:gpt2), got {text!r}"
    )


# ---------------------------------------------------------------------- env arguments


# The env arguments the commands set themselves, and why: --env-kwargs rejects them with that reason.
SET_BY_THE_COMMAND = {
    "split": "each command picks its splits (train: RL on 'train', checks on 'validation', results on "
    "'test'; eval: --split)",
    "render_mode": "the commands render nothing",
    # A single env's place among envs played side by side: the vector envs of the commands set it.
    "env_index": "the commands' vector envs set it",
    "num_envs": "the commands' vector envs set it (train, irl: --n-envs)",
}
# What --env-kwargs accepts: TextGenEnv's arguments, less those.
CLI_ENV_ARGUMENTS = tuple(name for name in ENV_ARGUMENTS if name not in SET_BY_THE_COMMAND)
# The shortcut flags, by the env argument each sets.
ENV_SHORTCUTS = {
    "task": "--task",
    "reward": "--reward",
    "task_kwargs": "--task-kwargs",
    "tokenizer": "--tokenizer",
}


def env_kwargs_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object of env arguments (keys of :data:`CLI_ENV_ARGUMENTS`)."""
    kwargs = json_object(text)
    for key in kwargs:
        if key in SET_BY_THE_COMMAND:
            raise argparse.ArgumentTypeError(f"{key!r} cannot be set here: {SET_BY_THE_COMMAND[key]}")
    unknown = [key for key in kwargs if key not in CLI_ENV_ARGUMENTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(CLI_ENV_ARGUMENTS)}"
        )
    return kwargs


class StoreOnce(argparse.Action):
    """Store the value, or exit 2 if the option was already given (argparse would keep the last silently)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest) is not None:
            parser.error(f"argument {option_string}: given twice; give it once")
        setattr(namespace, self.dest, values)


def add_env_arguments(parser: argparse.ArgumentParser, default_env: str = "TextGen-v0") -> None:
    """``--env`` and the env's arguments (``--task``, ``--reward``, ``--task-kwargs``, ``--tokenizer``,
    ``--env-kwargs``), shared by ``train``, ``eval``, ``irl`` and the demo; :func:`make_env` builds the env
    from them."""
    parser.add_argument(
        "--env",
        default=default_env,
        choices=env_ids(),
        metavar="ID",
        help=(f"environment id (default: %(default)s); one of: {', '.join(env_ids())}"),
    )
    parser.add_argument(
        "--task",
        action=StoreOnce,
        default=None,
        metavar="PATH_OR_NAME",
        help="the task: a JSON Lines / CSV file of examples (one JSON object per line, "
        '{"prompt": ..., "references": [...]}) or a built-in task name (default: the env\'s)',
    )
    parser.add_argument(
        "--reward",
        action=StoreOnce,
        default=None,
        choices=list_rewards(),
        metavar="NAME",
        help=f"the reward (default: the env's); one of: {', '.join(list_rewards())}. A weighted mix, or "
        "'learned' with its reward_model, goes in --env-kwargs: "
        '\'{"reward": "learned", "reward_model": "runs/irl/reward_model.pt"}\'',
    )
    parser.add_argument(
        "--task-kwargs",
        action=StoreOnce,
        type=json_object,
        default=None,
        metavar="JSON",
        help='task arguments as a JSON object, e.g. \'{"num_symbols": 6, "min_length": 3, "max_length": 3}\'',
    )
    parser.add_argument(
        "--tokenizer",
        action=StoreOnce,
        default=None,
        metavar="PATH_OR_NAME",
        help="a Hugging Face tokenizer for the env, by local folder or hub name (e.g. gpt2; needs the hf "
        "extra); default: the task's word tokenizer, or with --policy hf:X / an HF policy folder, the "
        "model's",
    )
    parser.add_argument(
        "--env-kwargs",
        action=StoreOnce,
        type=env_kwargs_object,
        default=None,
        metavar="JSON",
        help="keyword arguments for gym.make as a JSON object, e.g. '{\"max_new_tokens\": 6}'; keys: "
        f"{', '.join(CLI_ENV_ARGUMENTS)}",
    )


def env_kwargs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for ``gym.make``: ``--env-kwargs`` with the shortcut flags added; an argument
    given both ways is a usage error (exit 2), as neither silently winning would be what the user meant."""
    kwargs = dict(args.env_kwargs or {})
    for name, flag in ENV_SHORTCUTS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if name in kwargs:
            parser.error(f"argument {flag}: {name!r} is also given in --env-kwargs; give it once")
        kwargs[name] = value
    return kwargs


def make_env(
    parser: argparse.ArgumentParser, args: argparse.Namespace, defaults: dict[str, Any] | None = None
) -> gym.Env:
    """``gym.make(args.env, **env_kwargs(...))``; arguments the env rejects are a usage error (exit 2).

    Every env a command uses comes from this one: evaluation on other splits and the validation checks
    rebuild it from ``env.unwrapped.setup.kwargs``, which carry the task, reward and lengths it was made with.

    :param defaults: env arguments used where the user gave none (e.g. a Hugging Face policy's tokenizer and
        output size: ``{"tokenizer": "gpt2", "num_actions": 50257}``).
    """
    kwargs = env_kwargs(parser, args)
    for key, value in (defaults or {}).items():
        kwargs.setdefault(key, value)
    try:
        return gym.make(args.env, **kwargs)
    except (TypeError, ValueError, OSError) as err:  # OSError: a --task file that cannot be read
        given = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        parser.error(f"cannot make {args.env}{f' with {given}' if given else ''}: {err}")
