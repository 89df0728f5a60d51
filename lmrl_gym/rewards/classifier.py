"""A sequence reward from a ``transformers`` text classifier (sentiment, toxicity, a learned reward model)."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from lmrl_gym.rewards.base import Reward, RewardBatch, RewardContext
from lmrl_gym.rewards.hf_models import (
    is_name_or_path,
    load_model,
    load_tokenizer,
    max_positions,
    model_device,
    pad_right,
)

OUTPUTS = ("probability", "logit")


class ClassifierReward(Reward):
    """The probability (or logit) that a ``transformers`` sequence classifier gives one label, per episode.

    The episode's decoded text (special tokens skipped; with ``include_prompt``, the prompt followed by the
    text) is re-encoded with the classifier's own tokenizer, whatever the environment's tokenizer is, and
    scored in batches under ``torch.no_grad`` with the model in eval mode. A sequence reward: paid when the
    episode ends (or, with the environment's ``shaping=True``, as per-step differences).

    Example, RL4LMs' IMDB sentiment reward::

        reward = ClassifierReward("lvwerra/distilbert-imdb", label="POSITIVE")
        env = gym.make("TextGen-v0", task=..., reward={reward: 1.0, "lm": 0.1})

    :param model_or_path: an ``AutoModelForSequenceClassification`` checkpoint (hub name or local folder,
        loaded with ``from_pretrained``) or a model object. A checkpoint of another kind (a causal LM's
        folder would load with a random classification head) is refused.
    :param label: the label whose score is paid: a name from ``config.id2label`` or an index. Name it: a
        sentiment model's index 0 is usually NEGATIVE.
    :param tokenizer: the classifier's tokenizer (object, name or path); by default loaded from the model's
        own path (``model_or_path``, or ``model.name_or_path`` for an object).
    :param output: ``"probability"``: softmax over the labels, in [0, 1] (sigmoid of the label's logit for a
        multi-label or single-logit classifier, as ``transformers``' text-classification pipeline does);
        ``"logit"``: the label's raw logit (what a regression reward model outputs).
    :param include_prompt: score the prompt followed by the generated text (joined by one space unless one
        side is empty or already has whitespace at the join) instead of the generated text alone.
    :param batch_size: texts per forward pass (bounds memory; results do not depend on it). A classifier
        whose config names no pad token gets one text per pass (with a warning), as ``transformers``'
        last-token-pooling models refuse larger batches without one.
    :param max_length: tokens kept per text, the first ones (a warning says when texts are cut); default:
        the classifier's position limit.
    :param device: where the classifier runs; default: the environment's device when bound to one.
    :param name: the component name in ``info["reward_components"]`` (distinct names in a weighted sum).
    :raises ValueError: an unknown label (the message lists the classifier's labels), an unknown output,
        ``output="probability"`` for a regression model, a checkpoint that is not a sequence classifier.
    """

    per_token = False

    def __init__(
        self,
        model_or_path: Any,
        label: str | int,
        tokenizer: Any = None,
        output: str = "probability",
        include_prompt: bool = False,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        name: str = "classifier",
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
        what = "a sequence classifier (AutoModelForSequenceClassification)"
        if is_name_or_path(model_or_path):
            model = load_model(
                model_or_path, "AutoModelForSequenceClassification", ("ForSequenceClassification",), what
            )
        elif isinstance(model_or_path, torch.nn.Module) and hasattr(model_or_path, "config"):
            model = model_or_path.eval()
        else:
            raise TypeError(
                f"model_or_path must be a hub name, a local folder or a transformers sequence classifier, "
                f"got {type(model_or_path).__name__}"
            )
        self.model = model
        self.tokenizer = load_tokenizer(tokenizer, model, model_or_path, what)
        config = model.config
        self.label_index = resolve_label(label, config)
        self.label = config.id2label.get(self.label_index, str(self.label_index))
        problem_type = getattr(config, "problem_type", None)
        if output == "probability" and problem_type == "regression":
            raise ValueError(
                "output='probability' needs a classifier, but this model's problem_type is 'regression'; "
                "use output='logit' for its raw score"
            )
        # The text-classification pipeline's rule: independent labels (or one logit) get a sigmoid.
        self.activation = "logit"
        if output == "probability":
            multi_label = problem_type == "multi_label_classification" or config.num_labels == 1
            self.activation = "sigmoid" if multi_label else "softmax"
        self.output = output
        self.include_prompt = bool(include_prompt)
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else max_positions(model, self.tokenizer)
        # Models that pool at the last token (GPT-2, Llama, ...) find it by the config's pad id and refuse
        # any batch of more than one row without one (even of equal lengths): score one text at a time then.
        self.pad_id = getattr(config, "pad_token_id", None)
        self.rows_per_forward = batch_size
        if self.pad_id is None:
            self.rows_per_forward = 1
            warnings.warn(
                f"the classifier's config names no pad token (model.config.pad_token_id is None), so reward "
                f"{name!r} scores one text per forward pass; set model.config.pad_token_id (e.g. to the "
                "tokenizer's pad or eos id) to batch them",
                stacklevel=2,
            )
        # An empty text encodes to no token under tokenizers that add none (GPT-2's); a model cannot run on
        # zero tokens, so it is scored as the one token a document starts (or ends) with.
        empty = [self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.tokenizer.unk_token_id]
        self.empty_text_ids = [next((i for i in empty if i is not None), 0)]
        self.device = torch.device(device) if device is not None else None
        if self.device is not None:
            self.model.to(self.device)
        self.name = name

    def bind(self, context: RewardContext) -> ClassifierReward:
        """Move the classifier to the environment's device (unless ``device=`` chose one); shares the model."""
        bound = copy.copy(self)
        bound.device = self.device if self.device is not None else context.device
        bound.model.to(bound.device).eval()
        return bound

    def texts(self, batch: RewardBatch) -> list[str]:
        """What the classifier reads: each episode's text, after its prompt when ``include_prompt``."""
        if not self.include_prompt:
            return batch.texts
        return [
            join_prompt(prompt, text) for prompt, text in zip(batch.prompt_texts, batch.texts, strict=True)
        ]

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return self.score(self.texts(batch))

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> torch.Tensor:
        """The reward of each text, float64 ``[len(texts)]`` (a probability in [0, 1], or a logit)."""
        rows = self.encode(texts)
        scores = torch.zeros(len(rows), dtype=torch.float64)
        # Similar lengths share a forward pass, so little of each batch is padding.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), self.rows_per_forward):
            chunk = order[start : start + self.rows_per_forward]
            scores[chunk] = self.forward([rows[i] for i in chunk]).cpu()
        return scores

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text under the classifier's tokenizer (its special tokens added)."""
        texts = list(texts)
        if not texts:
            return []
        limit = self.max_length
        # Encoding to limit + 1 tokens tells which texts are too long without encoding them twice in full.
        kwargs = {"truncation": True, "max_length": limit + 1} if limit is not None else {}
        rows = [list(row) for row in self.tokenizer(texts, add_special_tokens=True, **kwargs)["input_ids"]]
        too_long = [i for i, row in enumerate(rows) if limit is not None and len(row) > limit]
        if too_long:
            warnings.warn(
                f"reward {self.name!r}: texts longer than the classifier's {limit} tokens are scored on their "
                f"first {limit} tokens",
                stacklevel=2,
            )
            cut = self.tokenizer(
                [texts[i] for i in too_long], add_special_tokens=True, truncation=True, max_length=limit
            )
            for i, row in zip(too_long, cut["input_ids"], strict=True):
                rows[i] = list(row)
        return [row if row else list(self.empty_text_ids) for row in rows]

    def forward(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """One forward pass over id rows (right-padded); the reward of each, float64 ``[len(rows)]``."""
        # Without a pad id, rows come one at a time (see __init__) and need no padding.
        ids, mask = pad_right(rows, self.pad_id if self.pad_id is not None else 0, model_device(self.model))
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        num_labels = self.model.config.num_labels
        if logits.shape != (len(rows), num_labels):
            raise ValueError(
                f"reward {self.name!r}: the model returned logits of shape {tuple(logits.shape)}; a sequence "
                f"classifier returns [batch, num_labels] = {[len(rows), num_labels]} (is it an "
                "AutoModelForSequenceClassification?)"
            )
        logits = logits.double()
        if self.activation == "softmax":
            return torch.softmax(logits, dim=-1)[:, self.label_index]
        if self.activation == "sigmoid":
            return torch.sigmoid(logits[:, self.label_index])
        return logits[:, self.label_index]

    def __repr__(self) -> str:
        source = getattr(self.model, "name_or_path", "") or type(self.model).__name__
        return f"ClassifierReward({os.fspath(source)!r}, label={self.label!r}, output={self.output!r})"


def resolve_label(label: str | int, config: Any) -> int:
    """The index of ``label`` (a name in ``config.id2label`` or an index below ``config.num_labels``).

    :raises ValueError: the label is not one of the classifier's; the message lists them.
    """
    id2label = {int(i): name for i, name in config.id2label.items()}
    listing = ", ".join(f"{i}: {name!r}" for i, name in sorted(id2label.items()))
    if isinstance(label, str):
        matches = [i for i, name in id2label.items() if name == label]
        if not matches:
            raise ValueError(f"label {label!r} is not one of the classifier's labels {{{listing}}}")
        return matches[0]
    if isinstance(label, bool) or not isinstance(label, int):
        raise TypeError(f"label must be a label name or an index, got {type(label).__name__}")
    if not 0 <= label < config.num_labels:
        raise ValueError(
            f"label index {label} is out of range for a classifier with {config.num_labels} labels {{{listing}}}"
        )
    return label


def join_prompt(prompt: str, text: str) -> str:
    """``prompt`` followed by ``text``: one space between them unless either is empty or whitespace is
    already there (subword decoders keep a continuation's leading space; word-level ones drop it)."""
    if not prompt or not text or prompt[-1].isspace() or text[0].isspace():
        return prompt + text
    return f"{prompt} {text}"
