"""The ``oracle`` task: a synthetic language sampled from a hidden random n-gram model with known probabilities.

Because the generating model is known, the true log-probability of any text is available
(:meth:`OracleLM.log_prob`, :meth:`OracleTask.log_prob`), which makes this task a testbed for LM-score
rewards and for rewards learned by inverse RL: a learned score can be compared against the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmrl_gym.tasks.base import SPLITS, Example, Task, stable_hash

# Largest next-symbol table (contexts x symbols) the oracle will build.
MAX_TABLE_ENTRIES = 20_000_000


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


class OracleLM:
    """A hidden random n-gram model over the words ``"w0" .. "w{num_words-1}"`` with an end marker.

    Symbols: words are ids ``0 .. num_words - 1``; id ``num_words`` is the *end* marker as a next symbol
    and the *BOS* marker as a context symbol (contexts are left-padded with BOS). For every context of the
    ``order - 1`` previous symbols (``(num_words + 1) ** (order - 1)`` contexts, reachable or not) the
    next-symbol distribution is::

        p(end | h)     = e_h,                e_h = m * (0.5 + u_h),  u_h ~ Uniform(0, 1),  m = 1 / (mean_length + 1)
        p(w | h)       = (1 - e_h) * q_h(w), q_h ~ Dirichlet(concentration * ones(num_words))

    all drawn from ``np.random.default_rng(seed)``. With a constant end probability ``m`` the number of
    words before *end* would be geometric with mean ``(1 - m) / m = mean_length``; ``e_h`` varies by
    context around ``m`` (within ``[m/2, 3m/2]``) so that where a sentence stops depends on its last words,
    and typical lengths stay near ``mean_length`` (the ``max_length`` cap then shortens the longest
    sentences: about 8.5 words on average for the defaults 10 / 20). A small ``concentration`` makes each
    ``q_h`` sparse (a few likely continuations), so the language has learnable structure.

    Sampling stops at *end* or after ``max_length`` words, whichever comes first: at ``max_length`` words
    the end is forced (probability 1). :meth:`log_prob` returns the exact log-probability under that
    process, so ``exp(log_prob)`` sums to 1 over all sequences of at most ``max_length`` words.

    :ivar table: float64 ``[(num_words + 1) ** (order - 1), num_words + 1]``; row = context index (base
        ``num_words + 1`` digits of the context symbols, oldest first), column = next symbol (last = end).
    """

    def __init__(
        self,
        num_words: int = 20,
        order: int = 2,
        concentration: float = 0.1,
        mean_length: float = 10.0,
        max_length: int = 20,
        seed: int = 0,
    ) -> None:
        self.num_words = _check_int("num_words", num_words, 2)
        self.order = _check_int("order", order, 1)
        self.concentration = _check_positive("concentration", concentration)
        self.mean_length = _check_positive("mean_length", mean_length)
        if self.mean_length < 1:
            raise ValueError(f"mean_length must be >= 1, got {mean_length}")
        self.max_length = _check_int("max_length", max_length, 1)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        base = self.num_words + 1
        num_contexts = base ** (self.order - 1)
        if num_contexts * base > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"an oracle with num_words={self.num_words} and order={self.order} needs a "
                f"{num_contexts} x {base} table; at most {MAX_TABLE_ENTRIES} entries are allowed"
            )
        self.words = [f"w{i}" for i in range(self.num_words)]
        self.word_to_id = {w: i for i, w in enumerate(self.words)}
        self.end_id = self.bos_id = self.num_words

        rng = np.random.default_rng(self.seed)
        gammas = rng.gamma(self.concentration, size=(num_contexts, self.num_words))
        sums = gammas.sum(axis=1, keepdims=True)
        q = np.where(sums > 0, gammas / np.where(sums > 0, sums, 1.0), 1.0 / self.num_words)
        m = 1.0 / (self.mean_length + 1.0)
        end = m * (0.5 + rng.random(num_contexts))
        self.table = np.concatenate([(1.0 - end)[:, None] * q, end[:, None]], axis=1)
        self._log_table = np.log(self.table, where=self.table > 0, out=np.full_like(self.table, -np.inf))
        self._powers = base ** np.arange(self.order - 2, -1, -1, dtype=np.int64)  # [order-1]

    # ------------------------------------------------------------------ helpers

    def context_index(self, contexts: np.ndarray) -> np.ndarray:
        """Row of :attr:`table` for symbol contexts int ``[B, order-1]`` (words, or ``bos_id`` for BOS)."""
        ctx = np.asarray(contexts, dtype=np.int64)
        if ctx.ndim != 2 or ctx.shape[1] != self.order - 1:
            raise ValueError(
                f"contexts must have shape [B, order-1] = [B, {self.order - 1}], got {ctx.shape}"
            )
        return ctx @ self._powers if self.order > 1 else np.zeros(ctx.shape[0], dtype=np.int64)

    def next_distribution(self, context: Sequence[str] = ()) -> dict[str, float]:
        """The next-symbol distribution after the words ``context`` (``"</s>"`` is the end marker)."""
        ids = [self.word_to_id[w] for w in (context.split() if isinstance(context, str) else context)]
        hist = ([self.bos_id] * (self.order - 1) + ids)[len(ids) :] if self.order > 1 else []
        row = self.table[
            int(self.context_index(np.array([hist], dtype=np.int64).reshape(1, self.order - 1))[0])
        ]
        return {**{w: float(p) for w, p in zip(self.words, row[:-1], strict=True)}, "</s>": float(row[-1])}

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, rng: np.random.Generator) -> list[list[str]]:
        """Draw ``n`` sequences of words (vectorised over sequences; a loop over time steps)."""
        n = _check_int("n", n, 0)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        ids = np.full((n, self.max_length), -1, dtype=np.int64)
        lengths = np.full(n, self.max_length, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        ctx = np.full((n, self.order - 1), self.bos_id, dtype=np.int64)
        cdf = np.cumsum(self.table, axis=1)
        cdf[:, -1] = 1.0
        for t in range(self.max_length):
            if not alive.any():
                break
            rows = cdf[self.context_index(ctx)]
            u = rng.random(n)
            symbol = np.minimum((rows <= u[:, None]).sum(axis=1), self.num_words)
            ended = alive & (symbol == self.end_id)
            lengths[ended] = t
            alive &= ~ended
            ids[alive, t] = symbol[alive]
            if self.order > 1:
                ctx = np.concatenate([ctx[:, 1:], symbol[:, None]], axis=1)
        words = self.words
        return [[words[i] for i in ids[b, : lengths[b]]] for b in range(n)]

    # ------------------------------------------------------------------ scoring

    def _encode(self, sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(sequences, str):
            sequences = [sequences]
        seqs = [s.split() if isinstance(s, str) else list(s) for s in sequences]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        width = max(int(lengths.max(initial=0)), 1)
        ids = np.full((len(seqs), width), self.end_id, dtype=np.int64)
        unknown = np.zeros(len(seqs), dtype=bool)
        get = self.word_to_id.get
        for b, s in enumerate(seqs):
            row = [get(w, -1) for w in s]
            if -1 in row:
                unknown[b] = True
                row = [max(i, 0) for i in row]
            ids[b, : len(row)] = row
        return ids, lengths, unknown

    def log_prob(self, sequences: Sequence[Sequence[str]] | Sequence[str], prefix_lengths=None) -> np.ndarray:
        """True natural-log probability of each whole sequence, end marker included: float64 ``[B]``.

        :param sequences: word lists, or strings (split on whitespace); a single string is one sequence.
        :param prefix_lengths: optional int ``[B]``; then the log-probability of the continuation after the
            first ``prefix_lengths[b]`` words, given them (``0 <= prefix_lengths[b] <= len(sequence b)``).
        :returns: ``-inf`` for sequences with unknown words or more than ``max_length`` words.
        """
        ids, lengths, unknown = self._encode(sequences)
        batch, width = ids.shape
        if prefix_lengths is None:
            prefix = np.zeros(batch, dtype=np.int64)
        else:
            prefix = np.asarray(prefix_lengths)
            if prefix.ndim != 1 or prefix.shape[0] != batch:
                raise ValueError(f"prefix_lengths must have shape [B] = [{batch}], got shape {prefix.shape}")
            if prefix.size and not np.issubdtype(prefix.dtype, np.integer):
                raise ValueError(f"prefix_lengths must be integers, got dtype {prefix.dtype}")
            prefix = prefix.astype(np.int64)
            if np.any(prefix < 0) or np.any(prefix > lengths):
                raise ValueError("prefix_lengths[b] must lie in [0, len(sequence b)]")
        # symbols: words, then end at position lengths[b]; contexts from the BOS-padded symbols
        symbols = np.concatenate([ids, np.full((batch, 1), self.end_id, dtype=np.int64)], axis=1)
        pos = np.arange(width + 1)[None, :]
        symbols = np.where(pos < lengths[:, None], symbols, self.end_id)
        padded = np.concatenate(
            [np.full((batch, self.order - 1), self.bos_id, dtype=np.int64), symbols], axis=1
        )
        cols = np.arange(width + 1)[:, None] + np.arange(self.order - 1)[None, :]  # [T+1, order-1]
        ctx = padded[:, cols].reshape(batch * (width + 1), self.order - 1)
        rows = self.context_index(ctx).reshape(batch, width + 1)
        step = self._log_table[rows, symbols]  # [B, T+1]
        # forced end at max_length words: the end term is 0 there
        step = np.where((pos == lengths[:, None]) & (lengths[:, None] >= self.max_length), 0.0, step)
        scored = (pos >= prefix[:, None]) & (pos <= lengths[:, None])
        total = np.where(scored, step, 0.0).sum(axis=1)
        invalid = unknown | (lengths > self.max_length)
        return np.where(invalid, -np.inf, total)

    def __repr__(self) -> str:
        return (
            f"OracleLM(num_words={self.num_words}, order={self.order}, concentration={self.concentration}, "
            f"mean_length={self.mean_length}, max_length={self.max_length}, seed={self.seed})"
        )


@dataclass(repr=False)
class OracleTask(Task):
    """A :class:`Task` whose text comes from a known :class:`OracleLM` (attribute ``oracle``)."""

    oracle: OracleLM | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.oracle, OracleLM):
            raise ValueError(f"OracleTask needs an OracleLM as oracle, got {type(self.oracle).__name__}")

    def log_prob(self, prompts: Sequence[str] | str, continuations: Sequence[str] | str) -> np.ndarray:
        """True log-probability of each continuation given its prompt (word strings): float64 ``[B]``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(continuations, str):
            continuations = [continuations]
        if len(prompts) != len(continuations):
            raise ValueError(
                f"prompts and continuations must have the same length, got {len(prompts)} and {len(continuations)}"
            )
        prompt_words = [p.split() for p in prompts]
        full = [pw + c.split() for pw, c in zip(prompt_words, continuations, strict=True)]
        return self.oracle.log_prob(
            full, prefix_lengths=np.array([len(pw) for pw in prompt_words], dtype=np.int64)
        )


def _carve(examples: list[Example], seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, list[Example]]:
    """Deterministic 80/10/10 carve keeping identical (prompt, reference) pairs in one split.

    Distinct texts are ordered by a stable hash and assigned by the cumulative share of examples before
    them, so splits are disjoint in their (prompt, reference) pairs and sized by examples.
    """
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(f"{ex.prompt}\x1f{ex.references[0]}", []).append(ex)
    keys = sorted(groups, key=lambda k: (stable_hash(k, seed), k))
    if len(keys) < 3:
        raise ValueError(
            f"the oracle produced only {len(keys)} distinct examples; need at least 3 to fill "
            f"{list(SPLITS)} (raise num_examples or num_words)"
        )
    total = len(examples)
    cut_train, cut_val = fractions[0] * total, (fractions[0] + fractions[1]) * total
    assignment, before = [], 0
    for key in keys:
        assignment.append(0 if before < cut_train else (1 if before < cut_val else 2))
        before += len(groups[key])
    # never leave validation or test empty
    if 2 not in assignment:
        assignment[-1] = 2
    if 1 not in assignment:
        assignment[-2] = 1
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for key, split in zip(keys, assignment, strict=True):
        out[SPLITS[split]].extend(groups[key])
    return out


def make_oracle_task(
    num_words: int = 20,
    order: int = 2,
    num_examples: int = 6000,
    prompt_length: int = 2,
    mean_length: float = 10.0,
    max_length: int = 20,
    concentration: float = 0.1,
    seed: int = 0,
) -> OracleTask:
    """Build the ``oracle`` task.

    ## Description

    Continue a sentence of a synthetic language. The language is generated by a hidden random n-gram
    model (:class:`OracleLM`): for every context of ``order - 1`` previous words (or sentence start) a
    sparse Dirichlet(``concentration``) distribution over the next word, plus an end-of-sentence
    probability around ``1 / (mean_length + 1)`` so sentences are about ``mean_length`` words long
    (never more than ``max_length``). The model's exact probabilities are exposed
    (``task.oracle.log_prob``, ``task.log_prob(prompts, continuations)``), so generated text and learned
    rewards can be scored against the truth.

    ## Tokens

    Word level: a token is one word ``"w0" .. "w{num_words-1}"``; text is words joined by single spaces.

    ## Prompt and reference

    Each example is one oracle sentence with more than ``prompt_length`` words. The prompt is its first
    ``prompt_length`` words (``""`` when ``prompt_length=0``); the single reference is the remaining words.
    Since the language is stochastic, the reference is one sample among many acceptable continuations;
    the true continuation log-probability is the natural quality measure. Sentences are kept with their
    natural frequencies, so frequent sentences can occur several times.

    ## Splits

    ``num_examples`` examples carved 80/10/10 into train / validation / test by a stable hash of the
    (prompt, reference) text: identical examples always share a split, so the splits are disjoint in
    their (prompt, reference) pairs (prompts alone may recur across splits). Everything is deterministic
    in ``seed``: the oracle is drawn from ``np.random.default_rng(seed)``, the sentences from an
    independent stream ``np.random.default_rng([seed, 1])``.

    ## Arguments

    * ``num_words`` (>= 2): vocabulary size of the language.
    * ``order`` (>= 1): n of the hidden n-gram model (2 = bigram).
    * ``num_examples`` (>= 3): total examples over the three splits.
    * ``prompt_length`` (0 <= prompt_length < max_length): words given as the prompt.
    * ``mean_length`` (>= 1): typical sentence length in words.
    * ``max_length`` (>= 1): hard cap on sentence length in words.
    * ``concentration`` (> 0): Dirichlet concentration; smaller = more predictable language.
    * ``seed``: seed of the oracle and of the sampled examples.

    ## Version History

    * v0: initial version.
    """
    num_examples = _check_int("num_examples", num_examples, 3)
    prompt_length = _check_int("prompt_length", prompt_length, 0)
    max_length = _check_int("max_length", max_length, 1)
    if prompt_length >= max_length:
        raise ValueError(
            f"prompt_length must be < max_length so a continuation fits, got prompt_length={prompt_length} "
            f"and max_length={max_length}"
        )
    oracle = OracleLM(
        num_words=num_words,
        order=order,
        concentration=concentration,
        mean_length=mean_length,
        max_length=max_length,
        seed=seed,
    )
    rng = np.random.default_rng([oracle.seed, 1])
    examples: list[Example] = []
    batch = max(2 * num_examples, 64)
    for _ in range(1000):
        for words in oracle.sample(batch, rng):
            if len(words) > prompt_length and len(examples) < num_examples:
                examples.append(Example(" ".join(words[:prompt_length]), [" ".join(words[prompt_length:])]))
        if len(examples) >= num_examples:
            break
    else:
        raise ValueError(
            f"could not draw {num_examples} sentences longer than prompt_length={prompt_length}; "
            "lower prompt_length or raise mean_length"
        )
    config = {
        "num_words": oracle.num_words,
        "order": oracle.order,
        "num_examples": num_examples,
        "prompt_length": prompt_length,
        "mean_length": oracle.mean_length,
        "max_length": max_length,
        "concentration": oracle.concentration,
        "seed": oracle.seed,
    }
    description = (
        f"Continue sentences of a synthetic language drawn from a hidden random {oracle.order}-gram model "
        f"over {oracle.num_words} words (prompt: first {prompt_length} words); the true log-probability "
        "of any text is known."
    )
    return OracleTask(
        name="oracle",
        splits=_carve(examples, oracle.seed),
        level="word",
        description=description,
        config=config,
        oracle=oracle,
    )
