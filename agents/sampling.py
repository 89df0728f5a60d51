"""The project's one sampler: inverse-CDF sampling with one uniform per row, each uniform keyed by
``(seed, stream, row, step)``.

Why not ``torch.multinomial``: on CPU it costs more than the model's own decode step (measured ~5.8 ms for
256 x 1000 logits on an Intel Xeon, where the model's cached step takes ~4.5 ms), Gumbel-max with
``exponential_`` the same; inverting the cumulative distribution at one uniform per row costs ~0.2 ms. And
``multinomial`` draws a row's random numbers from one generator shared by the whole batch, so a row's sample
depends on which rows share its batch (and, across processes, on the world size). Here a row's uniform is a
pure function of its key: ``seed`` (the run's), ``stream`` (e.g. the rollout's number), ``row`` (the global
env index, or the row of a decoding call) and ``step`` (the token's position in the episode). An episode's
noise is then the same whatever else is in the batch, whichever rows were dropped from the cache, and under
any number of processes (see DESIGN "Randomness and episode identity").

The uniforms come from a 32-bit integer hash (the "lowbias32" mixer found by C. Wellons' hash prospector:
xor-shift 16, multiply 0x7FEB352D, xor-shift 15, multiply 0x846CA68B, xor-shift 16), applied once per key
word; the top 24 bits make a float32 in [0, 1) on a grid of 2**-24. The arithmetic is int64 tensor work that
never overflows (32-bit products are split in 16-bit halves), so CPU and CUDA give the same bits.

Exactness: the id drawn is the one whose interval of the cumulative distribution (in float32, scaled by its
own total) contains the uniform, so each id is drawn with its probability up to float32 rounding of the
cumulative sums and the 2**-24 grid. An id of probability 0 (a ``-inf`` logit) is never drawn.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
# Offsets added to each key word before it is mixed in, so that (seed, stream, row, step) = (a, b, c, d)
# and its permutations hash differently (odd constants: the 32-bit golden ratio and two hash multipliers).
_WORD_OFFSETS = (0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F)


def _multiply32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``(x * constant) mod 2**32`` for int64 ``x`` in ``[0, 2**32)``, with every intermediate below 2**49."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 bijection of ``[0, 2**32)`` (int64 in, int64 out)."""
    x = x ^ (x >> 16)
    x = _multiply32(x, _MULTIPLIERS[0])
    x = x ^ (x >> 15)
    x = _multiply32(x, _MULTIPLIERS[1])
    return x ^ (x >> 16)


def _absorb(hash_: torch.Tensor | int, word: torch.Tensor | int, offset: int) -> torch.Tensor:
    """Mix one key word (any int64, taken mod 2**32 after folding its high half in) into the running hash."""
    word = torch.as_tensor(word, dtype=torch.int64)
    word = (word ^ (word >> 32)) & _MASK32
    return _mix32((torch.as_tensor(hash_, dtype=torch.int64) ^ ((word + offset) & _MASK32)) & _MASK32)


def keyed_uniforms(
    seed: int, stream: int | torch.Tensor, rows: torch.Tensor, steps: int | torch.Tensor
) -> torch.Tensor:
    """Uniforms in ``[0, 1)`` (float32, multiples of 2**-24), one per key, broadcast over the key's parts.

    :param seed: the run's seed (any int).
    :param stream: which sampling pass of the run (e.g. the rollout's number), int or int64 tensor.
    :param rows: int64 tensor of row keys (e.g. global env indices), on the device the result should be on.
    :param steps: int or int64 tensor of step keys (e.g. ``torch.arange(width)[None, :]``).
    :return: float32 tensor of the broadcast shape of ``rows`` and ``steps``, on ``rows.device``.
    """
    device = rows.device
    hash_ = _absorb(0, torch.tensor(int(seed) & ((1 << 63) - 1), device=device), _WORD_OFFSETS[0])
    hash_ = _absorb(hash_, torch.as_tensor(stream, dtype=torch.int64, device=device), _WORD_OFFSETS[1])
    hash_ = _absorb(hash_, rows.long(), _WORD_OFFSETS[2])
    hash_ = _absorb(hash_, torch.as_tensor(steps, dtype=torch.int64, device=device), _WORD_OFFSETS[3])
    return (hash_ >> 8).to(torch.float32) * (2.0**-24)


def sample_with_uniforms(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Invert each row's cumulative distribution at its uniform.

    :param probs: ``[B, V]`` non-negative weights (need not sum to 1; each row needs one positive entry).
    :param uniforms: ``[B]`` in ``[0, 1)``.
    :return: int64 ``[B]``: for each row the first id whose cumulative weight exceeds ``uniform x total``.
    """
    cdf = probs.float().cumsum(dim=-1)
    total = cdf[:, -1:]
    # Strictly below the total, so the id found has positive weight even when the product rounds up.
    target = torch.minimum(
        uniforms[:, None].to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total))
    )
    ids = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return ids.clamp_max_(probs.shape[-1] - 1)


def sample_logits(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One id per row from ``softmax(logits)`` (``[B, V]``, ``-inf`` where an id may not be taken), at the
    rows' uniforms ``[B]``: int64 ``[B]``."""
    return sample_with_uniforms(torch.softmax(logits.float(), dim=-1), uniforms)


class KeyedSampler:
    """Draws for one sampling pass over rows whose keys are known up front (a rollout, a decoding call).

    ``uniforms`` for the whole pass are made at once (``[rows, width]``: one batch of integer work instead
    of a dozen small kernels per step); ``sample(logits, step, rows)`` then inverts the distribution of the
    rows still held at their step's uniform.

    :param seed: the run's seed.
    :param stream: this pass's number within the run.
    :param row_keys: int64 ``[N]``, each row's key (its global env index, or its row in a decoding call).
    :param width: steps of the pass (the most tokens a row can draw).
    """

    def __init__(self, seed: int, stream: int, row_keys: torch.Tensor, width: int) -> None:
        self.seed, self.stream = int(seed), int(stream)
        steps = torch.arange(width, device=row_keys.device)
        self.uniforms = keyed_uniforms(self.seed, self.stream, row_keys[:, None], steps[None, :])

    def step_uniforms(self, step: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[B]`` uniforms of ``step`` for the pass's rows ``rows`` (all of them, in order, when omitted)."""
        uniforms = self.uniforms[:, step]
        return uniforms if rows is None else uniforms.index_select(0, rows)

    def sample(self, logits: torch.Tensor, step: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Ids ``[B]`` from ``softmax(logits [B, V])`` at ``step``; ``rows`` (``[B]``) says which of the
        pass's rows the logits belong to (all of them, in order, when omitted)."""
        return sample_logits(logits, self.step_uniforms(step, rows))

    def sample_probs(self, probs: torch.Tensor, step: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`sample`, from probabilities ``[B, V]`` (e.g. ``log_probs.exp()`` already computed)."""
        return sample_with_uniforms(probs, self.step_uniforms(step, rows))


def seed_from_generator(generator: torch.Generator) -> int:
    """A 62-bit seed drawn from ``generator`` (for callers that still hold a ``torch.Generator``)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
