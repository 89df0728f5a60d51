"""BLEU on token-id sequences, batched in torch, equal to sacreBLEU.

The numbers are exactly those of ``sacrebleu.metrics.BLEU(tokenize="none", smooth_method=...,
smooth_value=..., effective_order=...)`` when every id is written as one word (id 7 -> ``"w7"``), to
floating-point rounding (well under 1e-9 on the 0-100 scale). sacreBLEU's semantics, which this module
follows:

* per segment, each hypothesis n-gram count is clipped by its largest count in any *one* reference;
  ``total[n] = max(0, |h| - n + 1)``; the reference length is the real reference length closest to
  ``|h|``, the shorter one on a tie; corpus BLEU sums these statistics over segments;
* brevity penalty 1 if ``c >= r``, ``exp(1 - r / c)`` if ``0 < c < r``, 0 if ``c == 0``;
* if every ``correct[n]`` is 0 the score is 0, decided *before* any smoothing;
* smoothing ``none``, ``floor`` (default 0.1), ``add-k`` (default 1, added to both counts for n > 1 only),
  ``exp`` (the NIST/mteval method);
* precisions are taken for n = 1, 2, ... until the first order whose (smoothed) total is 0; with effective
  order the geometric mean runs over those orders only, without it the missing orders count as a
  precision of 0 (which makes the score 0);
* a reference of length 0 is a real reference (sacreBLEU only drops ``None`` references); absent
  references are marked here by ``ref_mask == False``.

The hot path (:func:`bleu_statistics`, :func:`bleu_from_statistics`, :func:`batched_sentence_bleu`) is
batched tensor code: the only Python loops are over the n-gram order and the bytes of a word. Statistics
stay integer; the score is computed in float64. Everything stays on the device of the inputs.

Matching never hashes n-grams into keys (which could collide, or overflow int64 for large vocabularies):
unigram equality between the hypothesis and each reference (and the hypothesis itself) is packed into bit
sets over positions, and an n-gram match is an (n-1)-gram match shifted by one position AND a unigram
match (see :func:`_ngram_match_counts`). Temporary memory is about ``B·T·(R+1)·(2·P + 8·N·⌈P/56⌉)``
bytes for a ``[B, T]`` hypothesis batch, ``[B, R, L]`` references and order N, with ``P = max(T, L)``
rounded up to a multiple of 8 (of 56 beyond 56): 3 MB for 256 episodes of 30 tokens and 3 references,
but it grows with the square of the length (0.75 GB for 256 episodes of 512 tokens and 3 references).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = [
    "SMOOTH_METHODS",
    "SMOOTH_DEFAULTS",
    "BleuStatistics",
    "bleu_statistics",
    "bleu_from_statistics",
    "batched_sentence_bleu",
    "sentence_bleu",
    "corpus_bleu",
    "pad_sequences",
    "pad_references",
    "bleu_signature",
]

SMOOTH_METHODS = ("none", "floor", "add-k", "exp")

#: Default ``smooth_value`` per method (sacreBLEU's ``BLEU.SMOOTH_DEFAULTS``); None = takes no value.
SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}

# sacreBLEU's ``my_log`` returns this for log(0) so that a zero precision drives the score to exp(-huge) = 0
# instead of raising; we reproduce it rather than using -inf so that 0 * log terms never make NaN.
_LOG_ZERO = -9999999999.0

# Marker written over reference padding and absent references before matching. Real ids are validated to
# be >= 0, so a reference n-gram reaching into padding never equals a hypothesis n-gram of real tokens, and
# no per-order validity masks are needed on the reference side.
_REF_PAD = -1


class BleuStatistics(NamedTuple):
    """BLEU sufficient statistics of B segments (all int64, on the inputs' device).

    :param correct: ``[B, max_order]`` clipped n-gram matches, n = 1..max_order.
    :param total: ``[B, max_order]`` hypothesis n-gram counts, ``max(0, hyp_len - n + 1)``.
    :param hyp_len: ``[B]`` hypothesis lengths in tokens.
    :param ref_len: ``[B]`` length in tokens of the real reference closest to ``hyp_len`` (shorter on ties).

    Corpus statistics are the sums over the batch dimension (see :meth:`sum`).
    """

    correct: torch.Tensor
    total: torch.Tensor
    hyp_len: torch.Tensor
    ref_len: torch.Tensor

    def sum(self) -> BleuStatistics:
        """Corpus statistics: the per-segment statistics summed, kept as a batch of one (``[1, ...]``)."""
        return BleuStatistics(
            correct=self.correct.sum(0, keepdim=True),
            total=self.total.sum(0, keepdim=True),
            hyp_len=self.hyp_len.sum(0, keepdim=True),
            ref_len=self.ref_len.sum(0, keepdim=True),
        )


# ---------------------------------------------------------------------------------------------------------
# validation


def _check_smoothing(smooth_method: str, smooth_value: float | None) -> float:
    """Validate the smoothing arguments; return the smoothing value to use (0.0 where it is unused)."""
    if smooth_method not in SMOOTH_METHODS:
        raise ValueError(
            f"unknown smooth_method {smooth_method!r}; valid methods are {', '.join(SMOOTH_METHODS)}"
        )
    default = SMOOTH_DEFAULTS[smooth_method]
    if default is None:
        return 0.0  # sacreBLEU ignores smooth_value for 'none' and 'exp'
    value = default if smooth_value is None else float(smooth_value)
    # A negative value would give a negative or zero total/precision and a math domain error in sacreBLEU;
    # NaN/inf would silently poison every score.
    if not (value >= 0.0 and value != float("inf")):
        raise ValueError(
            f"smooth_value must be a finite number >= 0 for {smooth_method!r}, got {smooth_value!r}"
        )
    return value


def _check_max_order(max_order: int) -> None:
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        raise ValueError(f"max_order must be an int >= 1, got {max_order!r}")


def _check_int_tensor(name: str, x: object, dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
        raise ValueError(f"{name} must have an integer dtype (token ids / lengths), got {x.dtype}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")


def _validate_inputs(
    hyp: torch.Tensor,
    hyp_lengths: torch.Tensor,
    refs: torch.Tensor,
    ref_lengths: torch.Tensor,
    ref_mask: torch.Tensor | None,
    check_values: bool = True,
) -> torch.Tensor:
    """Check shapes, dtypes, devices, lengths, ids and reference presence; return the bool ref mask.

    ``check_values=False`` skips the checks that read the data (lengths in range, non-negative ids, a
    reference per row): for callers such as the environments that build the tensors themselves.
    """
    _check_int_tensor("hyp", hyp, 2)
    _check_int_tensor("hyp_lengths", hyp_lengths, 1)
    _check_int_tensor("refs", refs, 3)
    _check_int_tensor("ref_lengths", ref_lengths, 2)
    batch, max_hyp = hyp.shape
    _, num_refs, max_ref = refs.shape
    if hyp_lengths.shape[0] != batch:
        raise ValueError(
            f"batch size mismatch: hyp has {batch} rows but hyp_lengths has {hyp_lengths.shape[0]}"
        )
    if refs.shape[0] != batch:
        raise ValueError(f"batch size mismatch: hyp has {batch} rows but refs has {refs.shape[0]}")
    if tuple(ref_lengths.shape) != (batch, num_refs):
        raise ValueError(
            f"ref_lengths must have shape {(batch, num_refs)} to match refs, got {tuple(ref_lengths.shape)}"
        )
    if ref_mask is None:
        ref_mask = torch.ones((batch, num_refs), dtype=torch.bool, device=hyp.device)
    else:
        if not isinstance(ref_mask, torch.Tensor) or ref_mask.dtype != torch.bool:
            raise ValueError("ref_mask must be a bool torch.Tensor (True = real reference)")
        if tuple(ref_mask.shape) != (batch, num_refs):
            raise ValueError(
                f"ref_mask must have shape {(batch, num_refs)} to match refs, got {tuple(ref_mask.shape)}"
            )
    devices = {t.device for t in (hyp, hyp_lengths, refs, ref_lengths, ref_mask)}
    if len(devices) > 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(str(d) for d in devices)}")
    if batch == 0 or not check_values:
        return ref_mask

    # One host sync for all data-dependent checks instead of one per check (matters on CUDA).
    hyp_pos = torch.arange(max_hyp, device=hyp.device)
    ref_pos = torch.arange(max_ref, device=hyp.device)
    hyp_real = hyp_pos < hyp_lengths[:, None]
    ref_real = (ref_pos < ref_lengths[..., None]) & ref_mask[..., None]
    bad = torch.stack(
        [
            ((hyp_lengths < 0) | (hyp_lengths > max_hyp)).any(),
            (ref_mask & ((ref_lengths < 0) | (ref_lengths > max_ref))).any(),
            ~ref_mask.any(-1).all() if num_refs > 0 else torch.ones((), dtype=torch.bool, device=hyp.device),
            ((hyp < 0) & hyp_real).any(),
            ((refs < 0) & ref_real).any(),
        ]
    ).tolist()
    if bad[0]:
        raise ValueError(f"hyp_lengths must lie in [0, {max_hyp}] (the padded hypothesis width)")
    if bad[1]:
        raise ValueError(
            f"ref_lengths of real references must lie in [0, {max_ref}] (the padded reference width)"
        )
    if bad[2]:
        rows = torch.nonzero(~ref_mask.any(-1)).flatten().tolist() if num_refs > 0 else list(range(batch))
        raise ValueError(f"every hypothesis needs at least one reference; rows without one: {rows[:10]}")
    if bad[3]:
        raise ValueError("token ids must be non-negative; found a negative id in hyp")
    if bad[4]:
        raise ValueError("token ids must be non-negative; found a negative id in refs")
    return ref_mask


# ---------------------------------------------------------------------------------------------------------
# statistics and scores

# Bit sets over positions are stored 56 bits to an int64 word: the top byte stays free, so words are never
# negative, shifts are well defined and the popcount below cannot overflow.
_WORD_BITS = 56
_WORD_MASK = (1 << _WORD_BITS) - 1
# Packing reads a bool tensor as int64 (8 booleans, one per byte), which depends on the byte order.
_LITTLE_ENDIAN = sys.byteorder == "little"


def _row_width(length: int) -> int:
    """Padded width of the position axis: whole bytes, and whole 7-byte words beyond one word."""
    length = max(length, 1)
    unit = 8 if length <= _WORD_BITS else _WORD_BITS
    return -(-length // unit) * unit


def _pack_bits_(flags: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> None:
    """Pack booleans into bit sets: flag ``j`` of ``[..., P]`` bool -> bit ``j % 56`` of word ``j // 56`` of
    ``out`` ``[..., W]`` int64.

    ``P = 8·K`` with ``K <= 7`` (then ``W = 1``) or ``K = 7·W``; ``scratch`` is ``[..., K]`` int64. Overwrites
    ``flags`` and ``scratch``. Reading the bool tensor as int64 puts 8 flags in one element, one per byte
    (bits 0, 8, ..., 56 on a little-endian machine); three shift-ORs gather them into the low byte. That is
    a few passes at 8 flags per element, where a weighted sum would first widen every flag to an integer.
    """
    *lead, width = flags.shape
    num_bytes = width // 8
    x = flags.view(torch.int64)  # [..., K]
    if _LITTLE_ENDIAN:
        torch.bitwise_right_shift(x, 7, out=scratch)
        scratch.bitwise_or_(x)  # bits 0-1 of byte k: flags k, k+1
        torch.bitwise_right_shift(scratch, 14, out=x)
        scratch.bitwise_or_(x)  # bits 0-3: flags k..k+3
        torch.bitwise_right_shift(scratch, 28, out=x)
        scratch.bitwise_or_(x).bitwise_and_(0xFF)  # bits 0-7: flags k..k+7; leftovers above masked off
    else:  # portable, slower
        weights = torch.arange(8, device=flags.device)
        scratch.copy_((flags.reshape(*lead, num_bytes, 8).long() << weights).sum(-1))
    # scratch now holds one byte of 8 flags per element; gather the (up to) 7 bytes of each word.
    words = out.shape[-1]
    per_word = scratch.view(*lead, words, num_bytes // words)
    out.copy_(per_word[..., 0])
    shifted = x[..., :words]  # the flags' memory is free again: a buffer for the shifted bytes
    for k in range(1, per_word.shape[-1]):  # at most 6: bytes within a word, not positions
        torch.bitwise_left_shift(per_word[..., k], 8 * k, out=shifted)
        out.bitwise_or_(shifted)


def _popcount_(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Number of set bits of ``[..., W]`` 56-bit words, summed over the last axis -> ``[...]`` int64.

    SWAR bit counting in place: overwrites ``x`` and ``scratch`` (same shape as ``x``).
    """
    torch.bitwise_right_shift(x, 1, out=scratch)
    x.sub_(scratch.bitwise_and_(0x55555555555555))  # 2-bit fields hold their own counts
    torch.bitwise_right_shift(x, 2, out=scratch)
    x.bitwise_and_(0x33333333333333).add_(scratch.bitwise_and_(0x33333333333333))  # 4-bit fields
    torch.bitwise_right_shift(x, 4, out=scratch)
    x.add_(scratch).bitwise_and_(0x0F0F0F0F0F0F0F)  # each byte holds its own count (<= 8)
    for shift in (8, 16, 32):  # add up the bytes; the total (<= 56) ends up in the low byte
        torch.bitwise_right_shift(x, shift, out=scratch)
        x.add_(scratch)
    x.bitwise_and_(0xFF)
    return x[..., 0] if x.shape[-1] == 1 else x.sum(-1)


def _ngram_match_counts(hyp_ids: torch.Tensor, rows: torch.Tensor, max_order: int) -> torch.Tensor:
    """For each hypothesis n-gram, how often it occurs in each row.

    :param hyp_ids: int64 ``[B, T]`` hypothesis ids.
    :param rows: int64 ``[B, S, P]`` rows to search (``P`` from :func:`_row_width`); the last row is the
        hypothesis itself, searched only at positions up to the current one.
    :param max_order: largest n-gram order N.
    :return: int64 ``[N, B, T, S]``: entry ``[n-1, b, k, s]`` counts the n-grams of row ``s`` equal to the
        hypothesis n-gram *ending* at ``k + n - 1`` (for the last row: those ending at or before it). Entries
        with ``k + n - 1 >= T`` are 0; the caller masks n-grams that reach into padding.

    Method: unigram equality is packed into bit sets over row positions (bit j of ``[b, i, s]`` set iff
    ``hyp[b, i] == rows[b, s, j]``). An n-gram ending at ``i`` matches one ending at ``j`` iff the
    (n-1)-grams ending at ``i-1`` and ``j-1`` match and the tokens at ``i`` and ``j`` do: a one-bit shift
    of the previous order's set ANDed with the unigram set, then a popcount. Memory is ``O(B·T·S·P)``
    bytes plus ``O(N·B·T·S·P/7)``. Large intermediate buffers are allocated once and reused in place:
    on CPU, page-faulting fresh memory costs more than the arithmetic.
    """
    batch, max_hyp = hyp_ids.shape
    _, num_rows, width = rows.shape
    num_bytes = width // 8
    words = -(-num_bytes // (_WORD_BITS // 8))
    device = hyp_ids.device
    cells = batch * max_hyp * num_rows
    # One workspace: the flags and the packing scratch, later the popcount scratch.
    workspace = torch.empty(cells * max(2 * width, 8 * max_order * words), dtype=torch.uint8, device=device)
    flags = workspace[: cells * width].view(torch.bool).view(batch, max_hyp, num_rows, width)
    torch.eq(hyp_ids[:, :, None, None], rows[:, None, :, :], out=flags)
    pack_scratch = workspace[cells * width : 2 * cells * width].view(torch.int64)
    ends = torch.empty((max_order, batch, max_hyp, num_rows, words), dtype=torch.long, device=device)
    _pack_bits_(flags, pack_scratch.view(batch, max_hyp, num_rows, num_bytes), out=ends[0])
    # The hypothesis row keeps positions j <= i only (row i of the triangle: bits 0..i).
    i = torch.arange(max_hyp, device=device)[:, None]
    w = torch.arange(words, device=device)
    ends[0, :, :, -1] &= (1 << (i + 1 - _WORD_BITS * w).clamp(0, _WORD_BITS)) - 1

    for n in range(2, max_order + 1):
        num_ends = max(max_hyp - n + 1, 0)
        prev, cur = ends[n - 2, :, :num_ends], ends[n - 1, :, :num_ends]
        torch.bitwise_left_shift(prev, 1, out=cur)
        cur.bitwise_and_(_WORD_MASK)
        if words > 1:  # carry the top bit of each word into the next word
            cur[..., 1:] |= prev[..., :-1] >> (_WORD_BITS - 1)
        cur.bitwise_and_(ends[0, :, n - 1 :])
        ends[n - 1, :, num_ends:] = 0  # no n-gram ends this early
    popcount_scratch = workspace[: ends.numel() * 8].view(torch.int64).view(ends.shape)
    return _popcount_(ends, popcount_scratch)


def bleu_statistics(
    hyp: torch.Tensor,
    hyp_lengths: torch.Tensor,
    refs: torch.Tensor,
    ref_lengths: torch.Tensor,
    ref_mask: torch.Tensor | None = None,
    *,
    max_order: int = 4,
    check_values: bool = True,
) -> BleuStatistics:
    """Per-segment BLEU sufficient statistics, as sacreBLEU computes them, for a batch.

    :param hyp: integer ``[B, T]`` hypothesis token ids; positions at or beyond ``hyp_lengths`` are padding
        and may hold any value.
    :param hyp_lengths: integer ``[B]`` hypothesis lengths in tokens, each in ``[0, T]``.
    :param refs: integer ``[B, R, L]`` reference token ids, padded likewise.
    :param ref_lengths: integer ``[B, R]`` reference lengths in tokens (0 = a real, empty reference).
    :param ref_mask: bool ``[B, R]``, True for a real reference, False for an absent one (a row of a
        hypothesis with fewer than R references); None = all real. Every row needs one real reference.
    :param max_order: largest n-gram order (sacreBLEU: 4).
    :param check_values: also check lengths, ids and reference presence (reads the data; the shapes are
        always checked). Callers that build the tensors themselves, like the environments, pass False.
    :return: :class:`BleuStatistics` of int64 tensors on the inputs' device.
    :raises ValueError: on bad shapes, dtypes, lengths, negative ids or a hypothesis without references.
    """
    _check_max_order(max_order)
    ref_mask = _validate_inputs(hyp, hyp_lengths, refs, ref_lengths, ref_mask, check_values)
    device = hyp.device
    batch, max_hyp = hyp.shape
    _, num_refs, max_ref = refs.shape
    hyp_lengths = hyp_lengths.long()
    ref_lengths = ref_lengths.long()
    orders = torch.arange(1, max_order + 1, device=device)

    # total[n] = number of n-grams in the hypothesis; hyp_len is the hypothesis length itself.
    total = (hyp_lengths[:, None] - orders + 1).clamp_min(0)
    if batch == 0:
        empty = torch.zeros((0,), dtype=torch.long, device=device)
        return BleuStatistics(
            torch.zeros((0, max_order), dtype=torch.long, device=device), total, empty, empty
        )

    # Closest real reference length, the shorter on a tie: minimise (|r - c|, r) lexicographically through
    # one integer key; absent references get a key larger than any real one.
    diff = (ref_lengths - hyp_lengths[:, None]).abs()
    key = diff * (max_ref + 1) + ref_lengths
    big = (max_hyp + max_ref + 2) * (max_ref + 1)
    key = torch.where(ref_mask, key, torch.full_like(key, big))
    closest_ref_len = ref_lengths.gather(1, key.argmin(1, keepdim=True)).squeeze(1)

    if max_hyp == 0:  # only empty hypotheses: nothing to match
        correct = torch.zeros((batch, max_order), dtype=torch.long, device=device)
        return BleuStatistics(correct=correct, total=total, hyp_len=hyp_lengths, ref_len=closest_ref_len)

    # The hypothesis is matched against R + 1 rows: its references and, last, itself (for the rank of each
    # occurrence, below). Reference padding and absent references are overwritten with a marker that
    # matches no real id (ids are >= 0). Hypothesis padding needs none: only n-grams wholly inside the
    # hypothesis are counted (``real_end`` below), and matched against itself only at positions j <= i.
    hyp_ids = hyp.long()
    ref_real = (torch.arange(max_ref, device=device) < ref_lengths[..., None]) & ref_mask[..., None]
    width = _row_width(max(max_ref, max_hyp))
    rows = torch.full((batch, num_refs + 1, width), _REF_PAD, dtype=torch.long, device=device)
    rows[:, :num_refs, :max_ref] = torch.where(ref_real, refs.long(), _REF_PAD)
    rows[:, num_refs, :max_hyp] = hyp_ids
    counts = _ngram_match_counts(hyp_ids, rows, max_order)  # [N, B, T, R + 1]

    # Clipping: a hypothesis n-gram occurring k times is credited min(k, m) times, m = its largest count in
    # any one reference; equivalently, its occurrences of rank 1..m are credited, the rank of an occurrence
    # being its count in the hypothesis up to and including itself. Counting per occurrence avoids finding
    # "first occurrences" explicitly.
    ref_count = counts[..., :-1].amax(-1)  # [N, B, T]
    rank = counts[..., -1]
    end_pos = torch.arange(max_hyp, device=device)
    real_end = end_pos < (hyp_lengths[None, :, None] - orders[:, None, None] + 1)  # n-gram inside the hyp
    correct = ((rank <= ref_count) & real_end).sum(-1).T.contiguous()  # [B, N]
    return BleuStatistics(correct=correct, total=total, hyp_len=hyp_lengths, ref_len=closest_ref_len)


def bleu_from_statistics(
    stats: BleuStatistics,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
) -> torch.Tensor:
    """BLEU scores from (per-segment or summed) statistics, following sacreBLEU's ``compute_bleu``.

    :param stats: :class:`BleuStatistics` with ``correct``/``total`` ``[B, N]`` (N = max order) and
        ``hyp_len``/``ref_len`` ``[B]``; pass ``stats.sum()`` for a corpus score.
    :param smooth_method: one of :data:`SMOOTH_METHODS`.
    :param smooth_value: the value for ``floor`` (default 0.1) and ``add-k`` (default 1); ignored otherwise.
    :param effective_order: average only over the orders that have n-grams (sacreBLEU's effective order).
    :return: float64 ``[B]`` scores on the 0-100 scale, on the statistics' device.
    :raises ValueError: on an unknown smoothing method, a bad smoothing value or inconsistent shapes.
    """
    value = _check_smoothing(smooth_method, smooth_value)
    correct, total, hyp_len, ref_len = stats
    if correct.dim() != 2 or correct.shape != total.shape:
        raise ValueError(
            f"stats.correct and stats.total must both be [B, max_order], got {tuple(correct.shape)} and {tuple(total.shape)}"
        )
    batch, max_order = correct.shape
    if tuple(hyp_len.shape) != (batch,) or tuple(ref_len.shape) != (batch,):
        raise ValueError(
            f"stats.hyp_len and stats.ref_len must be [{batch}], got {tuple(hyp_len.shape)} and {tuple(ref_len.shape)}"
        )
    f64 = torch.float64
    sys_len = hyp_len.to(f64)
    ref = ref_len.to(f64)

    # Brevity penalty; the where() keeps the c == 0 branch from dividing by zero.
    safe_sys = torch.where(sys_len > 0, sys_len, 1.0)
    bp = torch.where(sys_len < ref, torch.where(sys_len > 0, torch.exp(1.0 - ref / safe_sys), 0.0), 1.0)

    c = correct.to(f64)
    t = total.to(f64)
    if smooth_method == "add-k":
        # add-k smooths bigrams and up only, and before the "no n-grams" test below: with k > 0 the higher
        # orders of a short hypothesis are never cut off.
        c[:, 1:] += value
        t[:, 1:] += value
    # sacreBLEU walks n = 1, 2, ... and stops at the first order with no n-grams: `valid` marks the orders
    # before that stop; later precisions stay 0.
    valid = torch.cumprod((t != 0).to(torch.int8), dim=-1).bool()
    safe_t = torch.where(valid, t, 1.0)
    zero_match = c == 0
    if smooth_method == "exp":
        # The denominator doubles at every order so far whose match count is 0 (orders after the stop
        # count too, harmlessly: their precision is 0 whatever the denominator).
        doublings = torch.cumsum(zero_match, dim=-1)
        smoothed = 100.0 / (torch.pow(2.0, doublings.to(f64)) * safe_t)
    elif smooth_method == "floor":
        smoothed = 100.0 * value / safe_t
    else:  # 'none' and 'add-k' leave a zero precision at 0
        smoothed = torch.zeros_like(t)
    precision = torch.where(valid, torch.where(zero_match, smoothed, 100.0 * c / safe_t), 0.0)
    positive = precision > 0
    log_p = torch.where(positive, torch.log(torch.where(positive, precision, 1.0)), _LOG_ZERO)

    # Geometric mean over all orders, or with effective order over the orders before the stop. (sacreBLEU
    # sets the effective order inside its loop, after the stop test: if the very first order has no n-grams
    # it keeps the full order. Only hand-made statistics reach that case; a real one then scores 0 anyway.)
    mean_all = log_p.sum(-1) / max_order
    if effective_order:
        num_valid = valid.sum(-1)
        mean_valid = torch.where(valid, log_p, 0.0).sum(-1) / num_valid.clamp_min(1).to(f64)
        mean_log = torch.where(num_valid > 0, mean_valid, mean_all)
    else:
        mean_log = mean_all
    score = bp * torch.exp(mean_log)
    # No matching n-gram at all: 0, decided on the raw counts, before smoothing (sacreBLEU issue #141).
    return torch.where((correct > 0).any(-1), score, 0.0)


def batched_sentence_bleu(
    hyp: torch.Tensor,
    hyp_lengths: torch.Tensor,
    refs: torch.Tensor,
    ref_lengths: torch.Tensor,
    ref_mask: torch.Tensor | None = None,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = True,
    *,
    max_order: int = 4,
    check_values: bool = True,
) -> torch.Tensor:
    """Sentence BLEU of each of B hypotheses against its own references, in one batched computation.

    Equals ``sacrebleu.sentence_bleu`` per row (with ``tokenize="none"`` and ids written as words).

    :param hyp: integer ``[B, T]`` token ids, padded beyond ``hyp_lengths`` (any padding value).
    :param hyp_lengths: integer ``[B]`` lengths in tokens.
    :param refs: integer ``[B, R, L]`` reference token ids, padded.
    :param ref_lengths: integer ``[B, R]`` reference lengths in tokens.
    :param ref_mask: bool ``[B, R]``, False for absent references; None = all real.
    :param smooth_method: one of :data:`SMOOTH_METHODS` (sacreBLEU's sentence default: ``exp``).
    :param smooth_value: for ``floor``/``add-k``; None = the sacreBLEU default.
    :param effective_order: sacreBLEU's sentence-level default is True.
    :param max_order: largest n-gram order.
    :param check_values: see :func:`bleu_statistics`.
    :return: float64 ``[B]`` scores on the 0-100 scale, on the inputs' device.
    :raises ValueError: on invalid inputs (see :func:`bleu_statistics`) or smoothing arguments.
    """
    # Check the smoothing before the (larger) statistics computation so a typo fails fast.
    _check_smoothing(smooth_method, smooth_value)
    stats = bleu_statistics(
        hyp, hyp_lengths, refs, ref_lengths, ref_mask, max_order=max_order, check_values=check_values
    )
    return bleu_from_statistics(stats, smooth_method, smooth_value, effective_order)


# ---------------------------------------------------------------------------------------------------------
# list-based wrappers and helpers


def _as_id_list(seq: Sequence[int], what: str) -> list[int]:
    if isinstance(seq, str):
        # A string is a Sequence too, but of characters: almost certainly a caller passing text, not ids.
        raise ValueError(f"{what} must be a sequence of int token ids, got a str")
    return seq.tolist() if hasattr(seq, "tolist") else list(seq)


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_value: int = 0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad B id sequences into one tensor.

    :param seqs: B sequences of int token ids (lists, tuples, 1-D tensors or arrays), lengths may differ.
    :param pad_value: value written beyond each sequence's length.
    :param device: device of the results (default CPU).
    :return: ``(ids, lengths)``: int64 ``[B, T]`` with T the longest length, and int64 ``[B]``.
    :raises ValueError: if an element is not an integer.
    """
    rows = [_as_id_list(s, "each sequence") for s in seqs]
    lengths = [len(r) for r in rows]
    width = max(lengths, default=0)
    if width == 0:
        # torch.tensor([[], []]) would be float32; build the empty int64 tensor directly.
        ids = torch.full((len(rows), 0), pad_value, dtype=torch.long)
    else:
        ids = torch.tensor([r + [pad_value] * (width - len(r)) for r in rows])
        if ids.dtype == torch.bool or ids.dtype.is_floating_point or ids.dtype.is_complex:
            raise ValueError(f"token ids must be integers, got values of dtype {ids.dtype}")
        ids = ids.long()
    return ids.to(device), torch.tensor(lengths, dtype=torch.long, device=device)


def pad_references(
    refs: Sequence[Sequence[Sequence[int]]], pad_value: int = 0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad B lists of references (their number may differ) into the layout :func:`bleu_statistics` takes.

    :param refs: ``refs[b]`` = the references of segment b, each a sequence of int ids.
    :param pad_value: value written into padding positions and absent references.
    :param device: device of the results (default CPU).
    :return: ``(ids, lengths, mask)``: int64 ``[B, R, L]``, int64 ``[B, R]``, bool ``[B, R]`` (True = real),
        R = the largest number of references, L = the longest reference.
    :raises ValueError: if a segment has no reference or an element is not an integer.
    """
    per_segment = [[_as_id_list(r, "each reference") for r in rs] for rs in refs]
    for b, rs in enumerate(per_segment):
        if not rs:
            raise ValueError(f"every hypothesis needs at least one reference; segment {b} has none")
    num_refs = max((len(rs) for rs in per_segment), default=0)
    flat = [r for rs in per_segment for r in rs + [[]] * (num_refs - len(rs))]
    ids, flat_lengths = pad_sequences(flat, pad_value, device)
    batch = len(per_segment)
    mask = torch.tensor(
        [[k < len(rs) for k in range(num_refs)] for rs in per_segment], dtype=torch.bool, device=device
    ).reshape(batch, num_refs)
    return ids.reshape(batch, num_refs, ids.shape[-1]), flat_lengths.reshape(batch, num_refs), mask


def sentence_bleu(
    hyp_ids: Sequence[int],
    ref_ids: Sequence[Sequence[int]],
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = True,
    *,
    max_order: int = 4,
) -> float:
    """Sentence BLEU of one id sequence against one or more references (``sacrebleu.sentence_bleu``).

    :param hyp_ids: the hypothesis token ids.
    :param ref_ids: its references (at least one), each a sequence of token ids.
    :param smooth_method: one of :data:`SMOOTH_METHODS`.
    :param smooth_value: for ``floor``/``add-k``; None = the sacreBLEU default.
    :param effective_order: sacreBLEU's sentence-level default is True.
    :param max_order: largest n-gram order.
    :return: the score on the 0-100 scale.
    :raises ValueError: on invalid ids, no references or bad smoothing arguments.
    """
    if isinstance(ref_ids, str) or len(ref_ids) == 0:
        raise ValueError("every hypothesis needs at least one reference; ref_ids is empty")
    return corpus_bleu(
        [hyp_ids], [ref_ids], smooth_method, smooth_value, effective_order, max_order=max_order
    )


def corpus_bleu(
    hyps: Sequence[Sequence[int]],
    refs: Sequence[Sequence[Sequence[int]]],
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
    *,
    max_order: int = 4,
) -> float:
    """Corpus BLEU: statistics summed over segments, then one score (``sacrebleu.corpus_bleu``).

    Note the reference layout differs from sacreBLEU's (which takes reference *streams*): here ``refs[i]``
    is the list of references of ``hyps[i]``, one or more, and their number may differ between segments.

    :param hyps: S hypotheses, each a sequence of token ids.
    :param refs: S lists of references.
    :param smooth_method: one of :data:`SMOOTH_METHODS`.
    :param smooth_value: for ``floor``/``add-k``; None = the sacreBLEU default.
    :param effective_order: sacreBLEU's corpus-level default is False.
    :param max_order: largest n-gram order.
    :return: the score on the 0-100 scale.
    :raises ValueError: on an empty corpus, mismatched lengths, invalid ids, a segment without references
        or bad smoothing arguments.
    """
    _check_smoothing(smooth_method, smooth_value)
    if len(hyps) == 0:
        raise ValueError("corpus_bleu needs at least one hypothesis; hyps is empty")
    if len(hyps) != len(refs):
        raise ValueError(f"batch size mismatch: {len(hyps)} hypotheses but {len(refs)} reference lists")
    hyp, hyp_lengths = pad_sequences(hyps)
    ref, ref_lengths, ref_mask = pad_references(refs)
    stats = bleu_statistics(hyp, hyp_lengths, ref, ref_lengths, ref_mask, max_order=max_order)
    return float(bleu_from_statistics(stats.sum(), smooth_method, smooth_value, effective_order)[0])


def bleu_signature(
    smooth_method: str,
    smooth_value: float | None,
    effective_order: bool,
    max_order: int = 4,
    tokens: str = "ids",
) -> str:
    """A short description of the BLEU settings for logs, e.g.
    ``"BLEU(tokens=ids, order=4, smooth=floor[0.10], effective_order=True)"``; ``tokens`` names what the
    n-grams are made of (``"ids"``: token ids; ``"13a"``: words of sacreBLEU's default tokenisation of text).

    The smoothing value is shown (resolved to its default, two decimals as in sacreBLEU's signature) only
    for the methods that take one.
    """
    value = _check_smoothing(smooth_method, smooth_value)
    _check_max_order(max_order)
    smooth = smooth_method if SMOOTH_DEFAULTS[smooth_method] is None else f"{smooth_method}[{value:.2f}]"
    return (
        f"BLEU(tokens={tokens}, order={max_order}, smooth={smooth}, effective_order={bool(effective_order)})"
    )
