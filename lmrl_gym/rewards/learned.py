"""A learned reward: a small causal transformer that scores every (prefix, next token) pair.

``RewardNetwork`` maps the prompt and the tokens taken so far to one score per vocabulary id, so the
reward of an action is ``r(s_t, a_t) = f(bos, prompt, a_<t)[a_t]``; an episode's sequence reward is the
sum of its token rewards (eos included when the episode ended with it). Inverse RL (``agents.IRL``)
trains one from expert demonstrations; :class:`LearnedReward` serves it to the environments::

    gym.make("TextGen-Oracle-v0", reward="learned", reward_model="reward.pt")

The trunk is PyTorch's own ``nn.TransformerEncoder`` with a causal mask: ``lmrl_gym`` must not import the
agent library (see DESIGN.md), and the reward does not need the policy's KV cache.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmrl_gym.atomic_file import atomic_path
from lmrl_gym.rewards.base import Reward, RewardBatch, RewardContext
from lmrl_gym.tokenizer import Tokenizer

REWARD_MODEL_FORMAT = "lmrl_gym.reward_model/1"


@dataclass(frozen=True)
class RewardNetworkConfig:
    """Sizes of a :class:`RewardNetwork`.

    :param vocab_size: number of token ids (the tokenizer's).
    :param max_positions: longest input, ``1 + prompt tokens + actions`` (bos counts as one).
    :param n_layer: transformer blocks; :param n_embd: width; :param n_head: attention heads.
    """

    vocab_size: int
    max_positions: int = 128
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_positions", "n_layer", "n_embd", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class RewardNetwork(nn.Module):
    """Per-token reward ``r(s_t, a_t)`` for whole batches of episodes, in one forward pass.

    :param config: the sizes.
    :param tokenizer: the vocabulary the network scores; it is saved with the weights and checked against
        an environment's tokenizer when the reward is bound, so a network never scores another vocabulary.
    """

    def __init__(self, config: RewardNetworkConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        if config.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"config.vocab_size={config.vocab_size} does not match the tokenizer's {tokenizer.vocab_size}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.max_positions, config.n_embd)
        layer = nn.TransformerEncoderLayer(
            config.n_embd,
            config.n_head,
            dim_feedforward=4 * config.n_embd,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)
        # Start near zero: an untrained network gives every action about the same reward.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, max_positions: int, **sizes: Any) -> RewardNetwork:
        """A network for ``tokenizer`` taking inputs of up to ``max_positions`` tokens."""
        config = RewardNetworkConfig(vocab_size=tokenizer.vocab_size, max_positions=max_positions, **sizes)
        return cls(config, tokenizer)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def token_rewards(
        self,
        prompts: torch.Tensor,
        prompt_lengths: torch.Tensor,
        actions: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Reward of every action of a batch of episodes: float32 ``[B, T]``, 0 beyond ``lengths``.

        :param prompts: int ``[B, P]`` right-padded prompt ids; :param prompt_lengths: int ``[B]``.
        :param actions: int ``[B, T]`` the tokens taken, eos included where an episode ended with it.
        :param lengths: int ``[B]`` actions per episode.
        """
        dev = self.device
        prompts, actions = prompts.to(dev).long(), actions.to(dev).long()
        prompt_lengths, lengths = prompt_lengths.to(dev).long(), lengths.to(dev).long()
        bsz, width = actions.shape
        if width == 0:
            return torch.zeros(bsz, 0, device=dev)
        if prompts.shape[1] == 0:  # gather needs a column to read, even when no prompt uses it
            prompts = torch.full((bsz, 1), self.tokenizer.pad_id, dtype=torch.long, device=dev)
        total = 1 + prompts.shape[1] + width
        if total > self.config.max_positions:
            raise ValueError(
                f"episodes of {prompts.shape[1]} prompt tokens and {width} actions need {total} positions; "
                f"this reward network takes at most {self.config.max_positions}"
            )
        valid = torch.arange(width, device=dev)[None, :] < lengths[:, None]
        actions = torch.where(valid, actions, self.tokenizer.eos_id)
        # Pack [bos, prompt, actions] per row with right padding: under a causal mask no real position
        # ever attends to the padding after it, so no key-padding mask is needed.
        pos = torch.arange(total, device=dev)[None, :]
        from_prompt = prompts.gather(1, (pos - 1).clamp(0, prompts.shape[1] - 1).expand(bsz, -1))
        from_actions = actions.gather(1, (pos - 1 - prompt_lengths[:, None]).clamp(0, width - 1))
        ids = torch.where(pos <= prompt_lengths[:, None], from_prompt, from_actions)
        ids[:, 0] = self.tokenizer.bos_id
        x = self.token_embedding(ids) + self.position_embedding(pos)
        causal = nn.Transformer.generate_square_subsequent_mask(total, device=dev)
        hidden = self.norm(self.blocks(x, mask=causal, is_causal=True))
        # Action t is predicted from the position just before it: bos + prompt_length + t - 1.
        before = (prompt_lengths[:, None] + torch.arange(width, device=dev)[None, :]).clamp(max=total - 1)
        h = hidden.gather(1, before[..., None].expand(-1, -1, hidden.shape[-1]))
        # Only the taken action's row of the head: [B, T], never the [B, T, V] table.
        scores = (h * self.head.weight[actions]).sum(-1) + self.head.bias[actions]
        return torch.where(valid, scores, torch.zeros((), device=dev))

    def text_rewards(
        self,
        prompts: torch.Tensor,
        prompt_lengths: torch.Tensor,
        texts: torch.Tensor,
        text_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Rewards of complete texts: ``[B, T + 1]``, column ``t < text_lengths`` the reward of token t and
        column ``text_lengths`` the reward of the closing eos; 0 beyond.

        :param texts: int ``[B, T]`` token ids without eos; :param text_lengths: int ``[B]``.
        """
        eos = self.tokenizer.eos_id
        texts, text_lengths = texts.to(self.device).long(), text_lengths.to(self.device).long()
        actions = torch.cat([texts, torch.full_like(texts[:, :1], eos)], dim=1)
        actions = actions.scatter(1, text_lengths[:, None], eos)
        return self.token_rewards(prompts, prompt_lengths, actions, text_lengths + 1)

    def episode_rewards(
        self,
        prompts: torch.Tensor,
        prompt_lengths: torch.Tensor,
        actions: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Per-action rewards of episodes, ``[B, T]``, each text scored as complete.

        An episode that ended with eos gets :meth:`token_rewards`. One cut off by the length limit (its last
        action is not eos) also gets the reward of the eos that would close it, added to its last action:
        a policy cannot dodge the end-of-text reward by never ending (the reward of a text is the same
        however its episode stopped).
        """
        eos = self.tokenizer.eos_id
        actions, lengths = actions.to(self.device).long(), lengths.to(self.device).long()
        last = (lengths - 1).clamp(min=0)[:, None]
        ended = (lengths > 0) & (actions.gather(1, last)[:, 0] == eos)
        text_lengths = lengths - ended.long()
        width = actions.shape[1]
        texts = actions.masked_fill(
            torch.arange(width, device=self.device)[None, :] >= text_lengths[:, None], 0
        )
        rewards = self.text_rewards(prompts, prompt_lengths, texts, text_lengths)
        valid = torch.arange(width, device=self.device)[None, :] < lengths[:, None]
        per_action = torch.where(valid, rewards[:, :width], 0.0)  # a cut-off text's closing eos is no action
        closing = rewards.gather(1, text_lengths[:, None])[:, 0]
        cut_off = ~ended & (lengths > 0)
        return per_action.scatter_add(1, last, torch.where(cut_off, closing, 0.0)[:, None])

    def sequence_rewards(
        self,
        prompts: torch.Tensor,
        prompt_lengths: torch.Tensor,
        actions: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """``[B]`` learned reward of each episode's text, the sum of :meth:`episode_rewards`."""
        return self.episode_rewards(prompts, prompt_lengths, actions, lengths).sum(1)

    def save(self, path: str | os.PathLike) -> None:
        """Write config, vocabulary and weights to ``path`` atomically."""
        checkpoint = {
            "format": REWARD_MODEL_FORMAT,
            "config": asdict(self.config),
            "tokenizer": self.tokenizer.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> RewardNetwork:
        """Read what :meth:`save` wrote. Raises ``ValueError`` for a missing, truncated or foreign file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"reward model file {str(path)!r} does not exist")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for garbage / truncated files
            raise ValueError(f"{path} is not a readable reward model checkpoint: {err}") from err
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != REWARD_MODEL_FORMAT:
            raise ValueError(f"{path} is not a reward model checkpoint (format {REWARD_MODEL_FORMAT!r})")
        network = cls(
            RewardNetworkConfig(**checkpoint["config"]), Tokenizer.from_dict(checkpoint["tokenizer"])
        )
        network.load_state_dict(checkpoint["state_dict"])
        return network.to(device)


def check_same_vocabulary(network: RewardNetwork, tokenizer: Tokenizer) -> None:
    """Raise ``ValueError`` naming the first difference when ``network`` scores another vocabulary."""
    ours, theirs = network.tokenizer.id_to_token, tokenizer.id_to_token
    if ours == theirs and network.tokenizer.level == tokenizer.level:
        return
    if len(ours) != len(theirs):
        detail = f"it has {len(ours)} tokens, the environment's tokenizer {len(theirs)}"
    elif network.tokenizer.level != tokenizer.level:
        detail = f"it is {network.tokenizer.level}-level, the environment {tokenizer.level}-level"
    else:
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        detail = f"id {i} is {ours[i]!r} there and {theirs[i]!r} here"
    raise ValueError(f"the reward model was trained for another vocabulary: {detail}")


class LearnedReward(Reward):
    """A :class:`RewardNetwork` as an environment reward.

    :param model: a :class:`RewardNetwork` or the path of a saved one.
    :param per_token: True (default): pay ``r(s_t, a_t)`` at every step, so an episode's rewards sum to its
        sequence reward; False: pay the sequence reward when the episode ends.

    A text is always scored as complete: an episode cut off at ``max_new_tokens`` also pays the reward of
    the eos that would close it (otherwise a policy could avoid a negative end-of-text reward by never
    ending, which inverse RL on the oracle task showed it does). The network therefore needs
    ``max_positions >= 2 + max_prompt_tokens + max_new_tokens``.

    The bound reward shares the network object, so a network that keeps training (inverse RL) is seen
    by the environment at once. Scoring runs without gradients, in eval mode.
    """

    name = "learned"

    def __init__(
        self, model: RewardNetwork | str | os.PathLike | None = None, per_token: bool = True
    ) -> None:
        if model is None:
            raise ValueError(
                "the 'learned' reward needs a reward model: pass reward_model=PATH (a file written by "
                "RewardNetwork.save or agents.IRL) or a RewardNetwork"
            )
        if not isinstance(model, (RewardNetwork, str, os.PathLike)):
            raise ValueError(
                f"reward_model must be a RewardNetwork or a file path, got {type(model).__name__}"
            )
        self.model = model
        self.per_token = bool(per_token)

    def bind(self, context: RewardContext) -> LearnedReward:
        network = self.model
        if not isinstance(network, RewardNetwork):
            network = RewardNetwork.load(network, device=context.device)
        check_same_vocabulary(network, context.tokenizer)
        return LearnedReward(network.to(context.device), per_token=self.per_token)

    @torch.no_grad()
    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        network = self.model
        if not isinstance(network, RewardNetwork):
            raise RuntimeError("LearnedReward must be bound to an environment (Reward.bind) before use")
        lengths = batch.lengths.long()
        was_training = network.training
        network.eval()
        # Column lengths[b] holds the reward of the eos that closes the text.
        rewards = network.text_rewards(batch.prompts, batch.prompt_lengths, batch.generated, lengths)
        network.train(was_training)
        if not self.per_token:
            return rewards.sum(1)
        closing = rewards.gather(1, lengths[:, None])[:, 0]
        latest = rewards.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
        # A text cut off by the length limit is scored as complete: its last step also pays the closing eos.
        cut_off = lengths >= batch.generated.shape[1]
        paid = torch.where(batch.ended_with_eos, closing, latest + torch.where(cut_off, closing, 0.0))
        return torch.where((lengths > 0) | batch.ended_with_eos, paid, torch.zeros_like(paid))

    def __repr__(self) -> str:
        return f"LearnedReward(per_token={self.per_token})"
