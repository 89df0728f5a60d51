"""Our transformer as a Stable-Baselines3 actor-critic policy, so unmodified ``PPO`` / ``A2C`` train it.

SB3 builds an actor-critic policy from three parts: a features extractor, an ``mlp_extractor`` and the
action / value nets. Here the features extractor is the whole :class:`~agents.models.TransformerLM` trunk
(the final hidden state at each row's current position), the ``mlp_extractor`` is the identity, and the
action / value nets *are* the transformer's own tied ``lm_head`` and ``value_head``, so the policy's action
distribution is exactly the transformer's next-token distribution and a pretrained
:class:`~agents.policies.transformer.TransformerPolicy` can be fine-tuned without any freshly initialised layer::

    import agents.sb3  # registers the "TransformerPolicy" alias
    model = PPO("TransformerPolicy", env, policy_kwargs=dict(n_embd=64, n_layer=2))
    model = PPO("TransformerPolicy", env, policy_kwargs=dict(pretrained=transformer_policy))

Like SB3's own rollout, every call recomputes the whole prefix (no KV cache): O(L^2) per episode.

Invalid ids (pad, bos, unk) get logit -inf. SB3's ``CategoricalDistribution`` (``torch.distributions``)
handles that: their probability is exactly 0, and ``entropy()`` clamps logits to the dtype's minimum before
multiplying by the probabilities, so entropy, log-probabilities and their gradients stay finite. sb3-contrib's
masked entropy does not clamp (``logits * probs`` is NaN for -inf times 0 wherever the env's mask allows an
id the policy masks), so :class:`MaskableTransformerActorCriticPolicy` uses -1e8, the value sb3-contrib
itself puts on masked logits (its probability still underflows to exactly 0 in float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from agents.models import TransformerConfig, TransformerLM
from agents.policies.transformer import TransformerPolicy

try:  # sb3-contrib is optional: without it there is no MaskablePPO policy
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
except ImportError:  # pragma: no cover - sb3-contrib is installed in development and CI
    MaskablePPO = None
    MaskableActorCriticPolicy = None

POLICY_ALIAS = "TransformerPolicy"
# Defaults of lmrl_gym.Tokenizer: ids 0-3 are pad, bos, eos, unk; pad, bos and unk can never be generated.
DEFAULT_PAD_ID, DEFAULT_BOS_ID, DEFAULT_INVALID_IDS = 0, 1, (0, 1, 3)
# Transformer sizes when neither they nor a pretrained policy are given (TransformerPolicy.for_env's).
DEFAULT_SIZES = {
    "arch": "causal",
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 128,
    "dropout": 0.0,
    "n_encoder_layer": None,
}


def observation_widths(observation_space: spaces.Space) -> tuple[int, int]:
    """``(max_prompt_tokens, max_new_tokens)`` of a TextGen observation space, or ValueError."""
    if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != {
        "prompt_ids",
        "prefix_ids",
    }:
        raise ValueError(
            "the transformer policy needs a TextGen observation space Dict(prompt_ids=Box, prefix_ids=Box), "
            f"got {observation_space}"
        )
    widths = []
    for key in ("prompt_ids", "prefix_ids"):
        box = observation_space[key]
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(f"observation {key!r} must be a 1-D Box of token ids, got {box}")
        widths.append(box.shape[0])
    return widths[0], widths[1]


class TransformerFeaturesExtractor(BaseFeaturesExtractor):
    """A :class:`TransformerLM` read as an SB3 features extractor.

    Input: the TextGen observation dict as SB3 passes it, ``prompt_ids [B, P]`` and ``prefix_ids [B, T]``
    right-padded with ``config.pad_id``, as float32 (SB3 turns every Box into float; ids are exact below
    2**24). Output: ``[B, n_embd]``, the final (``ln_f``-normalised) hidden state at each row's current
    position, i.e. what the model's ``lm_head`` / ``value_head`` read to score the next token.

    :param observation_space: the env's ``Dict(prompt_ids=Box, prefix_ids=Box)``.
    :param config: the transformer's sizes (a :class:`TransformerConfig` or its ``to_dict()``); its
        ``max_positions`` must cover the observation widths.
    """

    def __init__(self, observation_space: spaces.Dict, config: TransformerConfig | dict[str, Any]) -> None:
        if isinstance(config, dict):
            config = TransformerConfig(**config)
        prompt_width, prefix_width = observation_widths(observation_space)
        super().__init__(observation_space, features_dim=config.n_embd)
        self.model = TransformerLM(config)
        self.model.check_lengths(prompt_width, prefix_width)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        pad_id = self.model.config.pad_id
        prompt_ids = observations["prompt_ids"].long()
        prefix_ids = observations["prefix_ids"].long()
        hidden = self.model.hidden_states(prompt_ids, (prompt_ids != pad_id).sum(-1), prefix_ids)
        # Output t is computed after t prefix tokens, so a row's current position is its prefix length.
        rows = torch.arange(prefix_ids.shape[0], device=prefix_ids.device)
        current = hidden[rows, (prefix_ids != pad_id).sum(-1)]
        return self.model.ln_f(current)


class MaskedLMHead(nn.Module):
    """The transformer's ``lm_head`` (shared, not copied) followed by ``masked_logit`` at invalid ids.

    :param lm_head: ``Linear(n_embd, vocab_size)``, tied to the token embedding.
    :param invalid_ids: ids that must never be sampled.
    :param masked_logit: -inf, or a large negative number where a consumer cannot take -inf.
    """

    def __init__(self, lm_head: nn.Linear, invalid_ids: Sequence[int], masked_logit: float) -> None:
        super().__init__()
        self.lm_head = lm_head
        self.masked_logit = masked_logit
        invalid = torch.zeros(lm_head.out_features, dtype=torch.bool)
        invalid[list(invalid_ids)] = True
        # Not persistent: it follows from the constructor arguments, and state dicts stay the model's.
        self.register_buffer("invalid_ids_mask", invalid, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, n_embd]`` -> logits ``[B, vocab_size]``."""
        return self.lm_head(features).masked_fill(self.invalid_ids_mask, self.masked_logit)


def resolve_transformer(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    sizes: dict[str, Any],
    pretrained: TransformerPolicy | None,
    pad_id: int | None,
    bos_id: int | None,
    invalid_ids: Sequence[int] | None,
) -> tuple[TransformerConfig, tuple[int, ...]]:
    """The transformer config and invalid ids for these spaces, checked; ValueError on any mismatch.

    Vocabulary = ``action_space.n``; widths = the observation's Box shapes. ``sizes`` holds the given
    (non-None) transformer sizes; with ``pretrained`` they must be absent (its config is used) and the ids
    come from its tokenizer.
    """
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"the transformer policy needs a Discrete(vocab_size) action space, got {action_space}"
        )
    vocab_size = int(action_space.n)
    prompt_width, prefix_width = observation_widths(observation_space)
    for key in ("prompt_ids", "prefix_ids"):
        if observation_space[key].high.max() >= vocab_size:
            raise ValueError(
                f"observation {key!r} holds ids up to {observation_space[key].high.max()} but the action space "
                f"is Discrete({vocab_size})"
            )
    if pretrained is not None:
        if not isinstance(pretrained, TransformerPolicy):
            raise ValueError(
                f"pretrained must be an agents.TransformerPolicy, got {type(pretrained).__name__}"
            )
        if sizes:
            raise ValueError(f"pass either pretrained or transformer sizes, not both (got {sorted(sizes)})")
        if pretrained.config.vocab_size != vocab_size:
            raise ValueError(
                f"the pretrained policy's vocabulary ({pretrained.config.vocab_size} tokens) does not match the "
                f"env's action space Discrete({vocab_size})"
            )
        if (pretrained.max_prompt_tokens, pretrained.max_new_tokens) != (prompt_width, prefix_width):
            raise ValueError(
                f"the pretrained policy was built for max_prompt_tokens={pretrained.max_prompt_tokens}, "
                f"max_new_tokens={pretrained.max_new_tokens}; the env's observations are {prompt_width} and "
                f"{prefix_width} wide"
            )
        tokenizer_ids = {
            "pad_id": pretrained.tokenizer.pad_id,
            "bos_id": pretrained.tokenizer.bos_id,
            "invalid_ids": tuple(pretrained.invalid_ids),
        }
        given = {"pad_id": pad_id, "bos_id": bos_id, "invalid_ids": invalid_ids}
        for name, value in given.items():
            if (
                value is not None
                and (tuple(value) if name == "invalid_ids" else value) != tokenizer_ids[name]
            ):
                raise ValueError(
                    f"{name}={value!r} differs from the pretrained tokenizer's {tokenizer_ids[name]!r}"
                )
        return pretrained.config, tokenizer_ids["invalid_ids"]

    pad_id = DEFAULT_PAD_ID if pad_id is None else int(pad_id)
    bos_id = DEFAULT_BOS_ID if bos_id is None else int(bos_id)
    invalid = tuple(int(i) for i in (DEFAULT_INVALID_IDS if invalid_ids is None else invalid_ids))
    for name, ids in (("pad_id", [pad_id]), ("bos_id", [bos_id]), ("invalid_ids", invalid)):
        if any(not 0 <= i < vocab_size for i in ids):
            raise ValueError(f"{name}={ids} outside the vocabulary of Discrete({vocab_size})")
    if len(set(invalid)) >= vocab_size:
        raise ValueError(f"invalid_ids={invalid} leave no valid action in Discrete({vocab_size})")
    sizes = {**DEFAULT_SIZES, **sizes}
    arch = sizes["arch"]
    # The position table covers the observations: prompt + bos + prefix (causal), or each side + bos.
    positions = prompt_width + 1 + prefix_width if arch == "causal" else max(prompt_width, prefix_width) + 1
    config = TransformerConfig(
        vocab_size=vocab_size, max_positions=positions, pad_id=pad_id, bos_id=bos_id, **sizes
    )
    return config, invalid


class _TransformerActorCritic:
    """What the SB3 and sb3-contrib transformer policies share: argument handling and ``_build``.

    Mixed in before ``ActorCriticPolicy`` / ``MaskableActorCriticPolicy``, whose ``__init__`` calls
    :meth:`_build`.
    """

    masked_logit: float = float("-inf")

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        arch: str | None = None,
        n_layer: int | None = None,
        n_head: int | None = None,
        n_embd: int | None = None,
        dropout: float | None = None,
        n_encoder_layer: int | None = None,
        pretrained: TransformerPolicy | None = None,
        pad_id: int | None = None,
        bos_id: int | None = None,
        invalid_ids: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        # The network is fixed: any other extractor, hidden layers or re-initialisation would break the
        # "action distribution = the transformer's next-token distribution" contract.
        if kwargs.pop("ortho_init", False):
            raise ValueError(
                "ortho_init=True would re-initialise the transformer's weights; it is always off"
            )
        if kwargs.pop("net_arch", None):
            raise ValueError(
                "net_arch must be empty: the transformer's own heads are the action and value nets"
            )
        if not kwargs.pop("share_features_extractor", True):
            raise ValueError("share_features_extractor must be True: one transformer feeds both heads")
        for name in ("features_extractor_class", "features_extractor_kwargs"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name} is fixed to the transformer; pass its sizes or pretrained= instead")
            kwargs.pop(name, None)
        given_sizes = {
            "arch": arch,
            "n_layer": n_layer,
            "n_head": n_head,
            "n_embd": n_embd,
            "dropout": dropout,
            "n_encoder_layer": n_encoder_layer,
        }
        sizes = {k: v for k, v in given_sizes.items() if v is not None}
        config, invalid = resolve_transformer(
            observation_space, action_space, sizes, pretrained, pad_id, bos_id, invalid_ids
        )
        self.invalid_ids = invalid  # read by _build, which runs inside the base __init__
        self.transformer_kwargs = {
            "arch": config.arch,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_embd": config.n_embd,
            "dropout": config.dropout,
            "n_encoder_layer": config.n_encoder_layer,
            "pad_id": config.pad_id,
            "bos_id": config.bos_id,
            "invalid_ids": invalid,
        }
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[],
            ortho_init=False,
            features_extractor_class=TransformerFeaturesExtractor,
            features_extractor_kwargs={"config": config},
            share_features_extractor=True,
            **kwargs,
        )
        if pretrained is not None:
            # Copy in place (the optimizer already holds these parameters); the pretrained policy stays
            # independent and usable.
            self.transformer.load_state_dict(pretrained.model.state_dict())

    @property
    def transformer(self) -> TransformerLM:
        """The :class:`TransformerLM` inside the features extractor (its heads are the action / value nets)."""
        return self.features_extractor.model

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()  # net_arch=[]: the identity, latent size n_embd
        self.action_net = MaskedLMHead(self.transformer.lm_head, self.invalid_ids, self.masked_logit)
        self.value_net = self.transformer.value_head  # Linear(n_embd, 1): SB3's values shape [B, 1]
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        # For policy.save() / .load(): rebuild from the sizes (the weights come from the state dict).
        data = super()._get_constructor_parameters()
        del data["features_extractor_class"], data["features_extractor_kwargs"]
        data.update(self.transformer_kwargs)
        return data


class TransformerActorCriticPolicy(_TransformerActorCritic, ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` whose network is a :class:`TransformerLM` with its own heads.

    Use with ``PPO`` / ``A2C`` (alias ``"TransformerPolicy"`` once :mod:`agents.sb3` is imported).
    ``policy_kwargs``:

    :param arch: / :param n_layer: / :param n_head: / :param n_embd: / :param dropout: /
        :param n_encoder_layer: sizes of a fresh transformer (defaults: ``causal``, 2, 4, 128, 0.0, None).
    :param pretrained: a :class:`~agents.policies.transformer.TransformerPolicy` whose weights are copied (instead of
        sizes); its vocabulary and observation widths must match the env's.
    :param pad_id: / :param bos_id: / :param invalid_ids: the tokenizer's pad and bos ids and the ids never
        to sample (logit -inf); defaults 0, 1, (0, 1, 3) as in ``lmrl_gym.Tokenizer``, or the pretrained
        policy's tokenizer's.

    Vocabulary (``action_space.n``) and widths come from the spaces. ``ortho_init`` is always off, the
    ``mlp_extractor`` is the identity, the action net is the tied ``lm_head`` (with -inf at invalid ids) and
    the value net is ``value_head``; other SB3 arguments (``optimizer_class``, ...) pass through.
    :raises ValueError: spaces that are not TextGen's, a pretrained policy that does not fit them, or
        arguments that would replace the transformer's network.
    """


if MaskableActorCriticPolicy is not None:

    class MaskableTransformerActorCriticPolicy(_TransformerActorCritic, MaskableActorCriticPolicy):
        """sb3-contrib ``MaskableActorCriticPolicy`` twin of :class:`TransformerActorCriticPolicy`.

        Same arguments. Invalid ids get logit -1e8, not -inf: sb3-contrib's masked entropy computes
        ``logits * probs`` without clamping, which is NaN for a -inf logit the env's mask leaves allowed.
        """

        masked_logit = -1e8


def register_policy_aliases() -> None:
    """Let ``PPO`` / ``A2C`` (and ``MaskablePPO`` when sb3-contrib is installed) take ``"TransformerPolicy"``."""
    PPO.policy_aliases[POLICY_ALIAS] = TransformerActorCriticPolicy
    A2C.policy_aliases[POLICY_ALIAS] = TransformerActorCriticPolicy
    if MaskablePPO is not None:
        MaskablePPO.policy_aliases[POLICY_ALIAS] = MaskableTransformerActorCriticPolicy
