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
batched tensor code: the only Python loop is over the n-gram order. Statistics stay integer; the score is
computed in float64. Everything stays on the device of the inputs.

Matching is done without hashing n-grams into keys (which could collide or overflow for large
vocabularies): unigram equality is computed once by broadcasting, and ``n``-gram equality at positions
``(i, j)`` is ``(n-1)``-gram equality at ``(i, j)`` AND unigram equality at ``(i+n-1, j+n-1)``. Memory is
``O(B·T·(T + R·L))`` booleans for a ``[B, T]`` hypothesis batch and ``[B, R, L]`` references.
"""

from __future__ import annotations

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
# be >= 0, so a reference n-gram reaching into padding can never equal a hypothesis n-gram made of real
# tokens, and no per-order reference validity masks are needed. (Hypothesis padding needs no marker: only
# n-grams that lie wholly inside the hypothesis are counted, see ``hyp_real_n``.)
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
) -> torch.Tensor:
    """Check shapes, dtypes, devices, lengths, ids and reference presence; return the bool ref mask."""
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
    if batch == 0:
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


def bleu_statistics(
    hyp: torch.Tensor,
    hyp_lengths: torch.Tensor,
    refs: torch.Tensor,
    ref_lengths: torch.Tensor,
    ref_mask: torch.Tensor | None = None,
    *,
    max_order: int = 4,
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
    :return: :class:`BleuStatistics` of int64 tensors on the inputs' device.
    :raises ValueError: on bad shapes, dtypes, lengths, negative ids or a hypothesis without references.
    """
    _check_max_order(max_order)
    ref_mask = _validate_inputs(hyp, hyp_lengths, refs, ref_lengths, ref_mask)
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

    # Overwrite reference padding (and absent references) with a marker that matches nothing real.
    ref_pos = torch.arange(max_ref, device=device)
    hyp_ids = hyp.long()
    ref_real = (ref_pos < ref_lengths[..., None]) & ref_mask[..., None]
    ref_ids = torch.where(ref_real, refs.long(), _REF_PAD)

    # Unigram equality. hyp-vs-hyp keeps only j <= i (lower triangle): the rank of occurrence i of an n-gram
    # is the number of equal n-grams at j <= i. Shifting both indices by the same amount keeps j <= i, so
    # the triangle survives the recursion below. For a real n-gram at i every j <= i is real too, so
    # hypothesis padding never enters a counted rank; rows of n-grams that reach into padding are garbage
    # and are dropped by ``hyp_real_n``.
    eq_hr1 = hyp_ids[:, :, None, None] == ref_ids[:, None, :, :]  # [B, T, R, L]
    eq_hh1 = (hyp_ids[:, :, None] == hyp_ids[:, None, :]) & torch.ones(
        (max_hyp, max_hyp), dtype=torch.bool, device=device
    ).tril()  # [B, T, T]

    correct_per_order = []
    eq_hr, eq_hh = eq_hr1, eq_hh1
    for n in range(1, max_order + 1):
        t_n = max(max_hyp - n + 1, 0)  # n-gram start positions in the padded hypothesis
        l_n = max(max_ref - n + 1, 0)
        if n > 1:
            # n-gram equal at (i, j) <=> (n-1)-gram equal at (i, j) and tokens equal at (i+n-1, j+n-1).
            eq_hr = eq_hr[:, :t_n, :, :l_n] & eq_hr1[:, n - 1 : n - 1 + t_n, :, n - 1 : n - 1 + l_n]
            eq_hh = eq_hh[:, :t_n, :t_n] & eq_hh1[:, n - 1 : n - 1 + t_n, n - 1 : n - 1 + t_n]
        # Clipping: a hypothesis n-gram occurring k times is credited min(k, m) times, m = its largest count
        # in one reference; equivalently, its occurrences of rank 1..m are credited. Counting per occurrence
        # avoids finding "first occurrences" explicitly.
        ref_count = eq_hr.sum(-1).amax(-1)  # [B, t_n]: best single-reference count
        rank = eq_hh.sum(-1)  # [B, t_n]: 1 for the first occurrence, 2 for the second, ...
        hyp_real_n = torch.arange(t_n, device=device) < (hyp_lengths[:, None] - n + 1)
        correct_per_order.append(((rank <= ref_count) & hyp_real_n).sum(-1))
    correct = torch.stack(correct_per_order, dim=1)
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
    safe_sys = torch.where(sys_len > 0, sys_len, torch.ones_like(sys_len))
    bp = torch.where(
        sys_len < ref,
        torch.where(sys_len > 0, torch.exp(1.0 - ref / safe_sys), torch.zeros_like(sys_len)),
        torch.ones_like(sys_len),
    )

    # The loop is over n-gram orders only, accumulating the log-precision sum left to right as sacreBLEU's
    # Python sum() does, so that rounding is the same.
    log_sum = torch.zeros(batch, dtype=f64, device=correct.device)
    still_valid = torch.ones(batch, dtype=torch.bool, device=correct.device)  # no break yet
    eff_order = torch.zeros(batch, dtype=f64, device=correct.device)
    mteval = torch.ones(batch, dtype=f64, device=correct.device)  # exp smoothing's doubling denominator
    for i in range(max_order):
        c = correct[:, i].to(f64)
        t = total[:, i].to(f64)
        if smooth_method == "add-k" and i > 0:
            # add-k smooths bigrams and up only, and before the "no n-grams" test: with k > 0 the higher
            # orders of a short hypothesis are never cut off.
            c = c + value
            t = t + value
        # sacreBLEU stops at the first order with no n-grams; later precisions stay 0.
        still_valid = still_valid & (t != 0)
        safe_t = torch.where(t != 0, t, torch.ones_like(t))
        zero_match = c == 0
        if smooth_method == "exp":
            mteval = torch.where(still_valid & zero_match, mteval * 2.0, mteval)
            smoothed = 100.0 / (mteval * safe_t)
        elif smooth_method == "floor":
            smoothed = 100.0 * value / safe_t
        else:  # 'none' and 'add-k' leave a zero precision at 0
            smoothed = torch.zeros_like(t)
        precision = torch.where(zero_match, smoothed, 100.0 * c / safe_t)
        precision = torch.where(still_valid, precision, torch.zeros_like(precision))
        safe_p = torch.where(precision > 0, precision, torch.ones_like(precision))
        log_p = torch.where(precision > 0, torch.log(safe_p), torch.full_like(precision, _LOG_ZERO))
        if effective_order:
            # Orders after the break are left out of the mean altogether.
            log_sum = log_sum + torch.where(still_valid, log_p, torch.zeros_like(log_p))
            eff_order = eff_order + still_valid.to(f64)
        else:
            log_sum = log_sum + log_p
    if not effective_order:
        eff_order = torch.full_like(eff_order, float(max_order))

    # eff_order is >= 1 wherever some correct[n] > 0 (then total[0] > 0); elsewhere the score is 0 anyway.
    safe_eff = torch.where(eff_order > 0, eff_order, torch.ones_like(eff_order))
    score = bp * torch.exp(log_sum / safe_eff)
    # No matching n-gram at all: 0, decided on the raw counts, before smoothing (sacreBLEU issue #141).
    any_match = (correct > 0).any(-1)
    return torch.where(any_match, score, torch.zeros_like(score))


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
    :return: float64 ``[B]`` scores on the 0-100 scale, on the inputs' device.
    :raises ValueError: on invalid inputs (see :func:`bleu_statistics`) or smoothing arguments.
    """
    # Check the smoothing before the (larger) statistics computation so a typo fails fast.
    _check_smoothing(smooth_method, smooth_value)
    stats = bleu_statistics(hyp, hyp_lengths, refs, ref_lengths, ref_mask, max_order=max_order)
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
    smooth_method: str, smooth_value: float | None, effective_order: bool, max_order: int = 4
) -> str:
    """A short description of the BLEU settings for logs, e.g.
    ``"BLEU(tokens=ids, order=4, smooth=floor[0.10], effective_order=True)"``.

    The smoothing value is shown (resolved to its default, two decimals as in sacreBLEU's signature) only
    for the methods that take one.
    """
    value = _check_smoothing(smooth_method, smooth_value)
    _check_max_order(max_order)
    smooth = smooth_method if SMOOTH_DEFAULTS[smooth_method] is None else f"{smooth_method}[{value:.2f}]"
    return f"BLEU(tokens=ids, order={max_order}, smooth={smooth}, effective_order={bool(effective_order)})"
