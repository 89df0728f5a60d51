"""``HFPolicy``: any Hugging Face ``transformers`` causal or encoder-decoder language model as a policy.

One file, public ``transformers`` API only (model forwards with ``attention_mask`` / ``position_ids`` /
``cache=``, ``Cache.reorder_cache`` / ``batch_select_indices``, ``save_pretrained`` / ``from_pretrained``):
RL4LMs broke on every ``transformers`` release because it patched private generation helpers.

How the :class:`~agents.policies.base.Policy` protocol maps onto a ``transformers`` model:

- **Value head**: ``nn.Linear(hidden, 1)`` on the trunk's last hidden state (``output_hidden_states``),
  zero-initialised so that V starts at 0; saved next to the model as ``value_head.pt``.
- **Causal models** read ``[prompt | actions]``. The env's prompts are right-padded; here they are
  left-padded (every row's prompt ends at the same column), so the logits of action ``t`` come from column
  ``P - 1 + t`` in every row and ``logits_to_keep`` can skip the prompt's logits (a 50k vocabulary makes
  them the largest tensor of the pass). Position ids count each row's own tokens
  (``cumsum(mask) - 1``), in decoding and in the update alike: GPT-2's learned absolute positions would
  otherwise see the padding. Attention masks are always explicit (``pad == eos`` in many tokenizers, so
  they cannot be inferred from ids). ``feed`` of ragged tokens leaves masked holes in the cache.
- **Encoder-decoder models** (T5, BART): the prompt goes to the encoder (once per rollout), the actions to
  the decoder after ``decoder_start_token_id``. Their decoders take no per-row positions, so a hole in the
  cache would be counted as a position. A ragged ``feed`` (rows given different counts) therefore rebuilds
  the decoder's cache from its tokens, left-padded so that every row's tokens are contiguous and end at the
  last column: exact for relative positions (T5 and its family), which see only distances between
  tokens. Decoders with absolute positions (BART, Marian) take only the same count in every row. Equal
  counts and ``step`` extend the cache as for causal models.
- **Logits** beyond the tokenizer (T5 and Qwen have more outputs than tokens) and the tokenizer's special
  tokens other than eos get ``-inf``: the env's action mask, read from the env tokenizer.

Install the ``hf`` extra (``pip install "lmrl-gym[hf]"``); ``transformers`` is imported when this module is.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.devices import resolve_device
from agents.policies.base import SequenceScores, env_setup_of, score_actions
from lmrl_gym.atomic_file import atomic_directory

POLICY_FILE = "lmrl_gym_policy.json"
VALUE_HEAD_FILE = "value_head.pt"
CHECKPOINT_FORMAT = "lmrl_gym.HFPolicy/1"


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'HFPolicy needs the Hugging Face extra: pip install "lmrl-gym[hf]" (transformers, tokenizers, '
            "datasets, peft)"
        ) from err
    return transformers


@dataclass
class HFDecodingState:
    """Incremental decoding state of an :class:`HFPolicy` (consumed by the call that receives it: the
    cache object is updated in place, so always continue from the returned state).

    ``cache``: the model's ``Cache``; ``attention_mask``: long ``[B, S]``, which cached columns are real
    (causal: prompt and generated tokens; encoder-decoder: decoder tokens); ``next_position``: long ``[B]``,
    the position id of each row's next token; ``logits`` ``[B, V]`` / ``values`` ``[B]``: the outputs for the
    current state (what ``feed`` returns for a row given no tokens); ``encoder_hidden`` ``[B, P, H]`` and
    ``encoder_mask`` ``[B, P]``: the encoder's output and mask; ``decoder_ids`` long ``[B, S]``: the
    decoder's input ids, aligned with ``attention_mask`` (encoder-decoder models only: a ragged ``feed``
    rebuilds the cache from them).
    """

    cache: Any
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor
    values: torch.Tensor
    encoder_hidden: torch.Tensor | None = None
    encoder_mask: torch.Tensor | None = None
    decoder_ids: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> HFDecodingState:
        """The rows ``index`` of every per-row tensor (the cache is handled by the caller)."""

        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.index_select(0, index)

        return HFDecodingState(
            self.cache,
            pick(self.attention_mask),
            pick(self.next_position),
            pick(self.logits),
            pick(self.values),
            pick(self.encoder_hidden),
            pick(self.encoder_mask),
            pick(self.decoder_ids),
        )


class HFPolicy(nn.Module):
    """A ``transformers`` ``AutoModelForCausalLM`` or ``AutoModelForSeq2SeqLM`` with a value head, behind
    the :class:`~agents.policies.base.Policy` protocol: every algorithm, rollout, decoder, evaluator,
    ``pretrain`` and IRL here takes it as it takes :class:`~agents.TransformerPolicy`.

    :param model: the language model (``PreTrainedModel``; a ``peft`` model for LoRA).
    :param tokenizer: its ``transformers`` tokenizer, or the env's tokenizer wrapper
        (``lmrl_gym.HFTokenizer``).
    :param max_prompt_tokens: / :param max_new_tokens: the env's observation widths; None: taken from the
        first env the policy is checked against (``check_env``, which every algorithm calls).
    :param device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
    :param value_head: a trained ``nn.Linear(hidden, 1)`` (default: a new, zero-initialised one).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        device: str | torch.device = "auto",
        value_head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        _transformers()
        from lmrl_gym.hf_tokenizer import HFTokenizer

        self.model = model
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        # T5's family biases attention by relative distance and has no position table: the decoder can be
        # re-read left-padded (see feed()).
        self._decoder_positions_are_relative = self.is_encoder_decoder and hasattr(
            model.config, "relative_attention_num_buckets"
        )
        self.num_actions = int(model.get_output_embeddings().out_features)
        tokens = tokenizer.num_tokens if isinstance(tokenizer, HFTokenizer) else len(tokenizer)
        if tokens > self.num_actions:
            raise ValueError(
                f"the model has {self.num_actions} output logits but its tokenizer has {tokens} tokens: "
                "every token must be a possible action (is this the model's own tokenizer?)"
            )
        if not isinstance(tokenizer, HFTokenizer):
            tokenizer = HFTokenizer(tokenizer, num_actions=self.num_actions)
        elif tokenizer.vocab_size != self.num_actions:
            raise ValueError(
                f"the tokenizer wrapper has num_actions={tokenizer.vocab_size} but the model has "
                f"{self.num_actions} output logits"
            )
        self.tokenizer = tokenizer
        self.max_prompt_tokens = None if max_prompt_tokens is None else int(max_prompt_tokens)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        hidden = self._hidden_size()
        self.value_trunk_gradient = True  # set by an algorithm's value_trunk_gradient; not saved
        if value_head is None:
            value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(value_head.weight)
            nn.init.zeros_(value_head.bias)
        self.value_head = value_head
        invalid = torch.zeros(self.num_actions, dtype=torch.bool)
        invalid[list(self.invalid_ids)] = True
        self.register_buffer("invalid_ids_mask", invalid, persistent=False)
        self._masks_logits = bool(invalid.any())  # else _mask_logits would copy [B, V] for nothing
        hf = self.tokenizer.hf_tokenizer
        # Where the model's own tokenizer adds special tokens around a text, the model was trained on them:
        # causal models get the bos (Llama-style tokenizers add it), encoder inputs the eos (T5 adds it).
        probe = hf("a", add_special_tokens=True)["input_ids"]
        bos = hf.bos_token_id
        self.prepend_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        self.bos_id = bos
        self.append_eos_to_encoder = (
            self.is_encoder_decoder and len(probe) > 0 and probe[-1] == hf.eos_token_id
        )
        # The env's pad id lies outside the model's vocabulary (lmrl_gym.HFTokenizer): masked positions are
        # filled with eos instead, and the attention mask keeps them out of every real token's view.
        self._filler = int(self.tokenizer.eos_id)
        self.decoder_start_id = getattr(model.config, "decoder_start_token_id", None)
        if self.is_encoder_decoder and self.decoder_start_id is None:
            raise ValueError("an encoder-decoder model needs config.decoder_start_token_id")
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.to(resolve_device(device))
        # The policy's mode is the model's (from_pretrained returns it in eval mode): a rollout restoring
        # "the caller's mode" must not switch the model's dropout on.
        self.train(bool(model.training))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        env: Any = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "auto",
        lora: Any = None,
        gradient_checkpointing: bool = False,
    ) -> HFPolicy:
        """Load a model and its tokenizer by hub name or local folder (``from_pretrained``); a folder written
        by :meth:`save` also restores the value head and widths.

        :param env: read the observation widths from it (and check the tokenizer matches).
        :param dtype: the weights' dtype (``torch.bfloat16``, ``"float32"``, ...; default: the checkpoint's).
        :param lora: a ``peft.LoraConfig``: only the adapters and the value head train.
        :param gradient_checkpointing: recompute activations in the backward pass (less memory, more time).
        """
        transformers = _transformers()
        path = Path(name_or_path)
        saved = _read_policy_file(path) if path.is_dir() else None
        if path.is_dir():
            # A LoRA checkpoint names its base model by this string (adapter_config.json): absolute, it still
            # finds the folder when read from another working directory (relative, it would go to the hub).
            path = path.resolve()
            name_or_path = str(path)
        config = transformers.AutoConfig.from_pretrained(name_or_path)
        auto = (
            transformers.AutoModelForSeq2SeqLM
            if getattr(config, "is_encoder_decoder", False)
            else transformers.AutoModelForCausalLM
        )
        try:
            model = auto.from_pretrained(name_or_path, **({"dtype": dtype} if dtype is not None else {}))
        except ValueError as err:
            raise ValueError(
                f"{name_or_path} is not a causal or encoder-decoder language model ({type(config).__name__}): {err}"
            ) from err
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if lora is not None:
            try:
                import peft
            except ImportError as err:
                raise ImportError('LoRA needs peft: pip install "lmrl-gym[hf]"') from err
            model = peft.get_peft_model(model, lora)
        value_head = None
        widths = (None, None)
        if saved is not None:
            value_head = _load_value_head(path, model)
            widths = (saved.get("max_prompt_tokens"), saved.get("max_new_tokens"))
        policy = cls(model, tokenizer, *widths, device=device, value_head=value_head)
        if env is not None:
            policy.check_env(env)
        return policy

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    @property
    def vocab_size(self) -> int:
        """Logits per step (the model's output size; may exceed the tokenizer's length)."""
        return self.num_actions

    @property
    def invalid_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.invalid_action_ids)

    def _hidden_size(self) -> int:
        config = self.model.config
        for name in ("hidden_size", "d_model", "n_embd"):
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        return int(self.model.get_output_embeddings().in_features)

    def check_env(self, env: Any) -> None:
        """Raise ValueError unless ``env`` speaks this policy's tokenizer with an action space of
        :attr:`vocab_size`; an unbound policy (widths None) takes the env's observation widths."""
        setup = env_setup_of(env)
        if setup.tokenizer != self.tokenizer:
            raise ValueError(
                f"the env's tokenizer ({setup.tokenizer!r}) is not the policy's ({self.tokenizer!r}); "
                "make the env with tokenizer= the policy's tokenizer (or its folder)"
            )
        actions = int(getattr(setup, "num_actions", setup.tokenizer.vocab_size))
        if actions != self.num_actions:
            raise ValueError(
                f"the env has {actions} actions but the model has {self.num_actions} output logits: make the "
                f"env with num_actions={self.num_actions}"
            )
        positions = self.max_positions()
        needed = setup.max_prompt_tokens + int(self.prepend_bos) + setup.max_new_tokens
        if positions is not None and needed > positions:
            raise ValueError(
                f"the env's episodes need {needed} positions (max_prompt_tokens={setup.max_prompt_tokens}"
                f"{' + bos' if self.prepend_bos else ''} + max_new_tokens={setup.max_new_tokens}) but the model "
                f"has {positions}: make the env with smaller max_prompt_tokens / max_new_tokens (longer prompts "
                "then keep their first tokens, with a warning)"
            )
        if self.max_prompt_tokens is None:
            self.max_prompt_tokens, self.max_new_tokens = setup.max_prompt_tokens, setup.max_new_tokens
        elif (setup.max_prompt_tokens, setup.max_new_tokens) != (self.max_prompt_tokens, self.max_new_tokens):
            raise ValueError(
                f"the policy was built for max_prompt_tokens={self.max_prompt_tokens}, "
                f"max_new_tokens={self.max_new_tokens}; the env has {setup.max_prompt_tokens}, "
                f"{setup.max_new_tokens}"
            )

    def max_positions(self) -> int | None:
        """How many positions a causal model's absolute position table holds (prompt, bos and new tokens
        together), or None where positions are relative (T5) or unbounded (rotary models report a limit in
        ``max_position_embeddings``, which is kept as the trained context)."""
        if self.is_encoder_decoder:
            return None
        config = self.model.config
        for name in ("n_positions", "max_position_embeddings"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prompt_lengths(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Lengths of the env's right-padded prompts (its pad id never occurs inside a prompt)."""
        return (torch.as_tensor(prompt_ids) != self.tokenizer.pad_id).sum(-1)

    # ------------------------------------------------------------------ shared pieces

    def _mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.masked_fill(self.invalid_ids_mask, float("-inf")) if self._masks_logits else logits

    def _value(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.value_trunk_gradient:  # the value loss trains the head only (see TransformerPolicy's)
            hidden = hidden.detach()
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def _padded_prompts(
        self, prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor | None, left: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The env's right-padded prompts as ``(ids, mask, lengths)``, left-padded (bos prepended where the
        model expects one), ``[B, P']``: every row's prompt ends at the last column. ``left=False`` keeps
        them right-padded (an encoder's input: BART's encoder has absolute positions)."""
        prompt_ids = torch.as_tensor(prompt_ids, device=self.device).long()
        if prompt_lengths is None:
            prompt_lengths = self.prompt_lengths(prompt_ids)
        lengths = torch.as_tensor(prompt_lengths, device=self.device).long()
        b, p = prompt_ids.shape
        if self.prepend_bos:  # still right-padded: [bos, prompt..., pad...]
            bos = torch.full((b, 1), self.bos_id, dtype=torch.long, device=self.device)
            prompt_ids, lengths, p = torch.cat([bos, prompt_ids], 1), lengths + 1, p + 1
        if self.append_eos_to_encoder:
            prompt_ids = torch.cat([prompt_ids, torch.full((b, 1), self._filler, device=self.device)], 1)
            prompt_ids[torch.arange(b, device=self.device), lengths] = self.tokenizer.eos_id
            lengths, p = lengths + 1, p + 1
        if bool((lengths == 0).any()):
            raise ValueError(
                "an empty prompt gives a causal model nothing to condition on and this model's tokenizer "
                "adds no bos token; give every example a prompt"
            )
        columns = torch.arange(p, device=self.device)
        if not left:
            mask = columns[None, :] < lengths[:, None]
            return torch.where(mask, prompt_ids, self._filler), mask.long(), lengths
        # Row b's token j (j < length) moves to column p - length + j.
        source = (columns[None, :] - (p - lengths)[:, None]).clamp(min=0)
        mask = columns[None, :] >= (p - lengths)[:, None]
        ids = torch.where(mask, prompt_ids.gather(1, source), self._filler)
        return ids, mask.long(), lengths

    def _forward(self, keep: int | None = None, **inputs: Any):
        if keep is not None and self._keeps_logits and not self.is_encoder_decoder:
            inputs["logits_to_keep"] = keep
        return self.model(**inputs, output_hidden_states=True, return_dict=True)

    @staticmethod
    def _last_hidden(output: Any) -> torch.Tensor:
        states = getattr(output, "decoder_hidden_states", None) or output.hidden_states
        return states[-1]

    def _encode(self, prompt_ids, prompt_lengths) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder-decoder models: the encoder's last hidden state ``[B, P', H]`` and mask ``[B, P']``."""
        ids, mask, _ = self._padded_prompts(prompt_ids, prompt_lengths, left=False)
        encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
        return encoded.last_hidden_state, mask

    def _new_cache(self) -> Any:
        transformers = _transformers()
        config = self.model.config
        if self.is_encoder_decoder:
            return transformers.EncoderDecoderCache(
                transformers.DynamicCache(config=config), transformers.DynamicCache(config=config)
            )
        return transformers.DynamicCache(config=config)

    # ------------------------------------------------------------------ incremental decoding

    def start(
        self,
        prompt_ids: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
    ) -> tuple[torch.Tensor, HFDecodingState]:
        """Read right-padded prompts ``[B, P]``; return next-token logits ``[B, V]`` and the state (a dynamic
        cache grows as needed, so ``max_new_tokens`` is not needed here)."""
        cache = self._new_cache()
        if self.is_encoder_decoder:
            encoder_hidden, encoder_mask = self._encode(prompt_ids, prompt_lengths)
            b = encoder_hidden.shape[0]
            start = torch.full((b, 1), self.decoder_start_id, dtype=torch.long, device=self.device)
            output = self._forward(
                encoder_outputs=(encoder_hidden,),
                attention_mask=encoder_mask,
                decoder_input_ids=start,
                cache=cache,
                use_cache=True,
            )
            mask = torch.ones(b, 1, dtype=torch.long, device=self.device)
            position = torch.ones(b, dtype=torch.long, device=self.device)
            decoder_ids = start
        else:
            ids, mask, lengths = self._padded_prompts(prompt_ids, prompt_lengths)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            output = self._forward(
                keep=1,
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
            encoder_hidden = encoder_mask = decoder_ids = None
            position = lengths
        logits = self._mask_logits(output.logits[:, -1])
        values = self._value(self._last_hidden(output)[:, -1])
        return logits, HFDecodingState(
            output.cache, mask, position, logits, values, encoder_hidden, encoder_mask, decoder_ids
        )

    def step(self, state: HFDecodingState, tokens: torch.Tensor) -> tuple[torch.Tensor, HFDecodingState]:
        """Append one token per row (``[B]``); return the next logits ``[B, V]`` and the state."""
        tokens = torch.as_tensor(tokens, device=self.device).long()
        if self.is_encoder_decoder:
            return self.feed(state, tokens[:, None], torch.ones_like(tokens))
        # The rollout's hot path: feed() with one token in every row, without its ragged-length machinery
        # (no host read of the longest row, no per-row gathers or where's): ~24 fewer operators per token.
        mask = torch.cat([state.attention_mask, state.attention_mask.new_ones(tokens.shape[0], 1)], 1)
        output = self._forward(
            keep=1,
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=state.next_position[:, None],
            cache=state.cache,
            use_cache=True,
        )
        logits = self._mask_logits(output.logits[:, -1])
        values = self._value(self._last_hidden(output)[:, -1])
        return logits, HFDecodingState(
            output.cache,
            mask,
            state.next_position + 1,
            logits,
            values,
            state.encoder_hidden,
            state.encoder_mask,
            state.decoder_ids,
        )

    def feed(
        self, state: HFDecodingState, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, HFDecodingState]:
        """Append forced tokens: row ``b`` reads ``tokens[b, :lengths[b]]`` (``[B, K]``; 0 allowed); return
        the logits ``[B, V]`` after each row's last token (unchanged for a row given none) and the state."""
        tokens = torch.as_tensor(tokens, device=self.device).long()
        lengths = torch.as_tensor(lengths, device=self.device).long()
        longest = int(lengths.max()) if lengths.numel() else 0  # one host read: the width to feed
        if longest == 0:
            return state.logits, state
        tokens = tokens[:, :longest]
        b, k = tokens.shape
        columns = torch.arange(k, device=self.device)
        new_mask = (columns[None, :] < lengths[:, None]).long()
        safe = torch.where(new_mask.bool(), tokens, self._filler)
        mask = torch.cat([state.attention_mask, new_mask], 1)
        decoder_ids = None
        if self.is_encoder_decoder:
            decoder_ids = torch.cat([state.decoder_ids, safe], 1)
            if bool((lengths != k).any()):  # one host read per feed, not per step (step feeds k = 1)
                return self._refeed_decoder(state, decoder_ids, mask, lengths)
            output = self._forward(
                encoder_outputs=(state.encoder_hidden,),
                attention_mask=state.encoder_mask,
                decoder_input_ids=safe,
                decoder_attention_mask=mask,
                cache=state.cache,
                use_cache=True,
            )
        else:
            positions = state.next_position[:, None] + columns[None, :]
            output = self._forward(
                keep=k,
                input_ids=safe,
                attention_mask=mask,
                position_ids=positions,
                cache=state.cache,
                use_cache=True,
            )
        rows = torch.arange(b, device=self.device)
        last = (lengths - 1).clamp(min=0)
        given = lengths > 0
        logits = torch.where(
            given[:, None], self._mask_logits(output.logits[:, -k:][rows, last]), state.logits
        )
        hidden = self._last_hidden(output)[:, -k:][rows, last]
        values = torch.where(given, self._value(hidden), state.values)
        return logits, HFDecodingState(
            output.cache,
            mask,
            state.next_position + lengths,
            logits,
            values,
            state.encoder_hidden,
            state.encoder_mask,
            decoder_ids,
        )

    def _refeed_decoder(
        self, state: HFDecodingState, decoder_ids: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, HFDecodingState]:
        """Encoder-decoder ``feed`` of ragged counts: the decoder reads every row's tokens again, left-padded
        (``decoder_ids`` / ``mask`` ``[B, S]``, holes anywhere), into a new cache."""
        if not self._decoder_positions_are_relative:
            raise ValueError(
                f"this encoder-decoder model ({type(self.model).__name__}) gives its decoder absolute "
                "positions shared by all rows, so feed() must give every row the same number of tokens; got "
                f"counts {lengths.tolist()}. Ragged feeds work for causal models and for decoders with "
                "relative positions (T5)"
            )
        # A stable sort on the mask moves each row's holes to its front and keeps its tokens in order; the
        # longest row then needs `width` columns.
        order = torch.argsort(mask, dim=1, stable=True)
        width = int(mask.sum(1).max())
        ids, mask = decoder_ids.gather(1, order)[:, -width:], mask.gather(1, order)[:, -width:]
        ids = torch.where(mask.bool(), ids, self._filler)
        output = self._forward(
            encoder_outputs=(state.encoder_hidden,),
            attention_mask=state.encoder_mask,
            decoder_input_ids=ids,
            decoder_attention_mask=mask,
            cache=self._new_cache(),
            use_cache=True,
        )
        given = lengths > 0
        logits = torch.where(given[:, None], self._mask_logits(output.logits[:, -1]), state.logits)
        values = torch.where(given, self._value(self._last_hidden(output)[:, -1]), state.values)
        return logits, HFDecodingState(
            output.cache,
            mask,
            state.next_position + lengths,
            logits,
            values,
            state.encoder_hidden,
            state.encoder_mask,
            ids,
        )

    def reorder(self, state: HFDecodingState, index: torch.Tensor) -> HFDecodingState:
        """The rows ``index`` (repeats allowed), in that order; the cache is reordered in place."""
        index = torch.as_tensor(index, device=self.device).long()
        state.cache.reorder_cache(index)
        return state.rows(index)

    def select(self, state: HFDecodingState, rows: torch.Tensor) -> HFDecodingState:
        """Only the rows ``rows`` (distinct, increasing): drops finished rows from the cache in place."""
        rows = torch.as_tensor(rows, device=self.device).long()
        state.cache.batch_select_indices(rows)
        return state.rows(rows)

    # ------------------------------------------------------------------ whole sequences

    def _teacher_forced(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over whole episodes: ``(logits [B, T, V], hidden [B, T, H], valid [B, T], safe tokens)``,
        position t being the state ``s_t`` in which action ``t`` was taken."""
        tokens = torch.as_tensor(tokens, device=self.device).long()
        lengths = torch.as_tensor(lengths, device=self.device).long()
        t = tokens.shape[1]
        valid = torch.arange(t, device=self.device)[None, :] < lengths[:, None]
        safe = torch.where(valid, tokens, self._filler)
        # The last action is never an input that matters (causal attention), so it is not fed.
        inputs, input_mask = safe[:, : max(t - 1, 0)], valid[:, : max(t - 1, 0)].long()
        if self.is_encoder_decoder:
            encoder_hidden, encoder_mask = self._encode(prompt_ids, prompt_lengths)
            b = tokens.shape[0]
            start = torch.full((b, 1), self.decoder_start_id, dtype=torch.long, device=self.device)
            ones = torch.ones(b, 1, dtype=torch.long, device=self.device)
            output = self._forward(
                encoder_outputs=(encoder_hidden,),
                attention_mask=encoder_mask,
                decoder_input_ids=torch.cat([start, inputs], 1),
                decoder_attention_mask=torch.cat([ones, input_mask], 1),
                use_cache=False,
            )
            logits, hidden = output.logits, self._last_hidden(output)
        else:
            ids, mask, _ = self._padded_prompts(prompt_ids, prompt_lengths)
            mask = torch.cat([mask, input_mask], 1)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            output = self._forward(
                keep=t,
                input_ids=torch.cat([ids, inputs], 1),
                attention_mask=mask,
                position_ids=positions,
                use_cache=False,
            )
            # Column P' - 1 + t holds the state of action t in every row (prompts end at column P' - 1).
            logits, hidden = (
                output.logits[:, -t:] if t else output.logits[:, :0],
                self._last_hidden(output)[:, -t:],
            )
            if t == 0:
                hidden = hidden[:, :0]
        return logits, hidden, valid, safe

    def hidden_states(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float ``[B, T, H]``: the trunk's last hidden state at each action's state (heads' input)."""
        _, hidden, valid, _ = self._teacher_forced(prompt_ids, tokens, lengths, prompt_lengths)
        return hidden.float() * valid[..., None]

    def sequence_logits(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``[B, T, V]`` (invalid ids ``-inf``) and values ``[B, T]`` at each action's state,
        in one teacher-forced pass."""
        logits, hidden, _, _ = self._teacher_forced(prompt_ids, tokens, lengths, prompt_lengths)
        return self._mask_logits(logits), self._value(hidden)

    def evaluate_sequences(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
        agent_mask: torch.Tensor | None = None,
    ) -> SequenceScores:
        """Log-probs, entropies and values ``[B, T]`` of whole episodes in one teacher-forced pass;
        positions beyond a row's length or outside ``agent_mask`` are 0."""
        logits, hidden, valid, safe = self._teacher_forced(prompt_ids, tokens, lengths, prompt_lengths)
        if agent_mask is not None:
            valid = valid & torch.as_tensor(agent_mask, device=self.device).bool()
        return score_actions(
            self._mask_logits(logits), safe, self._value(hidden), valid, self.invalid_ids_mask
        )

    def log_likelihood(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float ``[B, T]``: log p(tokens[b, t] | prompt, tokens[b, :t]) under the model's own softmax over
        all its logits (the maximum-likelihood objective of ``pretrain``); 0 at or beyond a row's length."""
        logits, _, valid, safe = self._teacher_forced(prompt_ids, tokens, lengths, prompt_lengths)
        log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe[..., None]).squeeze(-1)
        return torch.where(valid, log_probs, torch.zeros((), device=self.device))

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``[B, V]`` and values ``[B]`` from observations (the whole prefix recomputed)."""
        prompt_ids = torch.as_tensor(obs["prompt_ids"], device=self.device).long()
        prefix = torch.as_tensor(obs["prefix_ids"], device=self.device).long()
        prefix_lengths = (prefix != self.tokenizer.pad_id).sum(-1)
        # One more (ignored) token after each prefix: the pass scores the state before each given token.
        rows = torch.arange(prefix.shape[0], device=self.device)
        padded = torch.cat([prefix, torch.full_like(prefix[:, :1], self._filler)], 1)
        padded[rows, prefix_lengths] = self._filler
        logits, hidden, _, _ = self._teacher_forced(prompt_ids, padded, prefix_lengths + 1, None)
        return self._mask_logits(logits[rows, prefix_lengths]), self._value(hidden[rows, prefix_lengths])

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> None:
        """Write a folder: the model (``save_pretrained``; for LoRA, the adapters), its tokenizer, the value
        head and the widths. The folder is assembled beside ``path`` and moved into place, so a crash never
        leaves a half-written checkpoint."""
        path = Path(path)
        with atomic_directory(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.hf_tokenizer.save_pretrained(tmp)
            torch.save(
                {k: v.detach().cpu() for k, v in self.value_head.state_dict().items()}, tmp / VALUE_HEAD_FILE
            )
            meta = {
                "format": CHECKPOINT_FORMAT,
                "max_prompt_tokens": self.max_prompt_tokens,
                "max_new_tokens": self.max_new_tokens,
                "lora": _is_peft(self.model),
            }
            (tmp / POLICY_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto") -> HFPolicy:
        """Read a folder written by :meth:`save` (for LoRA: the base model named in the adapter config, with
        the saved adapters, trainable); with ``env``, check that it matches.

        A LoRA folder holds the adapters only and names its base model by ``base_model_name_or_path`` in
        ``adapter_config.json``: the hub name, or the absolute path of the local folder it was loaded from,
        which must still be there (no copy of the base is kept).

        :raises ValueError: a path that is not such a folder; a LoRA folder whose local base model is gone.
        """
        path = Path(path)
        meta = _read_policy_file(path)
        if meta is None:
            raise ValueError(
                f"{path} is not an HFPolicy checkpoint folder (no {POLICY_FILE}); use HFPolicy.from_pretrained "
                "for a plain transformers model"
            )
        if meta.get("lora"):
            import peft

            transformers = _transformers()
            base_path = _adapter_config(path).get("base_model_name_or_path") or ""
            if Path(base_path).is_absolute() and not Path(base_path).is_dir():
                raise ValueError(
                    f"{path} holds LoRA adapters of the base model in the folder {base_path}, which no longer "
                    "exists; put the base model back there (or edit base_model_name_or_path in "
                    "adapter_config.json)"
                )
            base = (
                peft.AutoPeftModelForCausalLM
                if not _adapter_is_seq2seq(path)
                else peft.AutoPeftModelForSeq2SeqLM
            )
            model = base.from_pretrained(path, is_trainable=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            policy = cls(
                model,
                tokenizer,
                meta.get("max_prompt_tokens"),
                meta.get("max_new_tokens"),
                device=device,
                value_head=_load_value_head(path, model),
            )
        else:
            policy = cls.from_pretrained(path, device=device)
        if env is not None:
            policy.check_env(env)
        return policy

    def frozen_copy(self) -> HFPolicy:
        """A frozen copy (the KL reference). With LoRA it shares the base model and copies the adapter
        weights only, so a second base model is never held."""
        if not _is_peft(self.model):
            return copy.deepcopy(self).eval().requires_grad_(False)
        return LoraReference(self)


class LoraReference(nn.Module):
    """The KL reference of a LoRA :class:`HFPolicy`: its adapter weights as they were when made, scored on the
    policy's own base model by swapping those weights in for the pass (nothing else is copied).

    Only :meth:`evaluate_sequences` is served: the reference is scored, never decoded from.
    """

    def __init__(self, policy: HFPolicy) -> None:
        super().__init__()
        self.__dict__["policy"] = policy  # not a submodule: the reference must not own the policy's weights
        self.adapter = {
            name: p.detach().clone()
            for name, p in policy.model.named_parameters()
            if _is_adapter_weight(name)
        }
        self.value_head = copy.deepcopy(policy.value_head).requires_grad_(False)
        self.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @torch.no_grad()
    def evaluate_sequences(self, *args: Any, **kwargs: Any) -> SequenceScores:
        policy = self.policy
        params = dict(policy.model.named_parameters())
        current = {name: params[name].detach().clone() for name in self.adapter}
        head = policy.value_head
        was_training = policy.training
        policy.eval()
        try:
            for name, value in self.adapter.items():
                params[name].data.copy_(value)
            policy.value_head = self.value_head
            return policy.evaluate_sequences(*args, **kwargs)
        finally:
            for name, value in current.items():
                params[name].data.copy_(value)
            policy.value_head = head
            policy.train(was_training)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The adapter weights and the value head (what an algorithm checkpoint stores of the reference)."""
        adapter = {f"adapter.{name}": value for name, value in self.adapter.items()}
        head = {f"value_head.{name}": value for name, value in self.value_head.state_dict().items()}
        return adapter | head

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> Any:
        adapter = {k.removeprefix("adapter."): v for k, v in state.items() if k.startswith("adapter.")}
        head = {k.removeprefix("value_head."): v for k, v in state.items() if k.startswith("value_head.")}
        if strict and set(adapter) != set(self.adapter):
            missing, unexpected = set(self.adapter) - set(adapter), set(adapter) - set(self.adapter)
            raise ValueError(
                f"LoRA reference state does not match the policy's adapters: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        for name, value in adapter.items():
            self.adapter[name] = value.to(self.adapter[name].device, self.adapter[name].dtype).clone()
        return self.value_head.load_state_dict(head, strict=strict)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def _is_adapter_weight(name: str) -> bool:
    return "lora_" in name


def _adapter_config(path: Path) -> dict:
    return json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))


def _adapter_is_seq2seq(path: Path) -> bool:
    return _adapter_config(path).get("task_type") == "SEQ_2_SEQ_LM"


def _read_policy_file(path: Path) -> dict | None:
    file = path / POLICY_FILE
    if not file.is_file():
        return None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{file} is not an HFPolicy checkpoint (format {meta.get('format')!r})")
    return meta


def _load_value_head(path: Path, model: Any) -> nn.Linear:
    state = torch.load(path / VALUE_HEAD_FILE, map_location="cpu", weights_only=True)
    head = nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    return head
