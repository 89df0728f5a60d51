"""An interpolated Kneser-Ney n-gram language model over token ids, vectorised with numpy.

Notation (``n`` = ``order``, ``V`` = ``vocab_size``, ``h`` a history of ``k - 1`` ids, ``w`` the next id,
``h'`` = ``h`` without its oldest id):

Training sequences are left-padded with ``n - 1`` bos ids and followed by one eos id; every position of
``sequence + [eos]`` yields one ``n``-gram (its ``n - 1`` predecessors in the padded sequence plus itself).
Lower-order ``k``-grams (``k < n``) are the suffixes of those ``n``-grams, so every one of them has at least
one left extension.

Counts per order ``k``:

* highest order ``k = n``: raw counts ``a_n(h w) = c(h w)``;
* lower orders ``k < n``: continuation counts ``a_k(h w) = N1+(. h w)``, the number of distinct ids ``v``
  such that the ``(k + 1)``-gram ``v h w`` occurs.

Per history: ``T_k(h) = sum_w a_k(h w)`` (context total) and ``N_k(h) = N1+(h .) = |{w : a_k(h w) > 0}|``
(number of distinct continuations). The unigram level has the single empty history.

Interpolated Kneser-Ney with one absolute discount ``D_k`` per order::

    P_0(w)      = 1 / V                                          (uniform over the whole vocabulary)
    P_k(w | h)  = (max(a_k(h w) - D_k, 0) + D_k * N_k(h) * P_{k-1}(w | h')) / T_k(h)     if T_k(h) > 0
    P_k(w | h)  = P_{k-1}(w | h')                                                        if T_k(h) = 0

and the model's probability is ``P_n(w | h)`` with ``h`` the previous ``n - 1`` ids (bos-padded).

Every observed count is an integer ``>= 1 >= D_k``, so ``sum_w max(a_k(h w) - D_k, 0) = T_k(h) - D_k N_k(h)``
and each seen-history level is a proper distribution whenever the level below is; by induction from the
uniform ``P_0`` every ``P_k(. | h)`` sums to 1 over all ``V`` ids for every history (seen or not, including
ids never seen in training), and with ``0 < D_k`` every probability is strictly positive.

Discounts: a fixed ``discount`` in ``(0, 1]`` is used for every order; ``discount=None`` estimates
``D_k = n1 / (n1 + 2 n2)`` per order, where ``n1`` / ``n2`` are the numbers of ``k``-grams whose count
``a_k`` is exactly 1 / 2, clamped to ``[DISCOUNT_MIN, DISCOUNT_MAX]`` (``0.5`` when ``n1 + 2 n2 = 0``).

Storage: a ``k``-gram ``(x_1, ..., x_k)`` is encoded as the int64 key ``sum_j x_j V^(k - j)`` (so a
history key times ``V`` plus ``w`` is the ``k``-gram key); per order the model keeps sorted key arrays
with their counts, and sorted history keys with ``T_k`` and ``N_k``. Look-ups use ``np.searchsorted``;
the only Python loop at query time is over the ``n`` orders.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DISCOUNT_MIN = 0.05
DISCOUNT_MAX = 0.95
_FORMAT = "lmrl_gym.KneserNeyLM/1"
_INT64_MAX = int(np.iinfo(np.int64).max)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``keys[i] == query`` (keys sorted and unique), else 0; any query shape."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    idx = np.searchsorted(keys, query)
    idx = np.minimum(idx, keys.size - 1)
    found = keys[idx] == query
    return np.where(found, values[idx], 0).astype(values.dtype, copy=False)


def _estimate_discount(counts: np.ndarray) -> float:
    n1 = int(np.count_nonzero(counts == 1))
    n2 = int(np.count_nonzero(counts == 2))
    if n1 + 2 * n2 == 0:
        return 0.5
    return float(min(max(n1 / (n1 + 2 * n2), DISCOUNT_MIN), DISCOUNT_MAX))


class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram model on integer token ids (see the module docstring for the maths).

    :param order: the n of the n-gram model (``>= 1``); the model conditions on ``order - 1`` previous ids.
    :param discount: absolute discount in ``(0, 1]`` for every order, or ``None`` to estimate one per order
        as ``n1 / (n1 + 2 n2)`` clamped to ``[DISCOUNT_MIN, DISCOUNT_MAX]``.
    """

    def __init__(self, order: int = 3, discount: float | None = None) -> None:
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if discount is not None:
            if isinstance(discount, bool) or not isinstance(discount, (int, float, np.floating, np.integer)):
                raise ValueError(f"discount must be a float in (0, 1] or None, got {discount!r}")
            if not 0.0 < float(discount) <= 1.0:
                raise ValueError(f"discount must be in (0, 1] (or None to estimate it), got {discount}")
            discount = float(discount)
        self.order = int(order)
        self.discount = discount
        self.vocab_size: int | None = None
        self.bos_id: int | None = None
        self.eos_id: int | None = None
        # Per level k = 1..order (index k - 1): the discount and the sorted tables.
        self.discounts: list[float] = []
        self._gram_keys: list[np.ndarray] = []
        self._gram_counts: list[np.ndarray] = []
        self._hist_keys: list[np.ndarray] = []
        self._hist_totals: list[np.ndarray] = []
        self._hist_types: list[np.ndarray] = []

    # ------------------------------------------------------------------ fitting

    @property
    def is_fitted(self) -> bool:
        return self.vocab_size is not None

    def fit(
        self, sequences: Sequence[Sequence[int]], vocab_size: int, bos_id: int, eos_id: int
    ) -> KneserNeyLM:
        """Count the n-grams of ``sequences`` (each bos-padded on the left and followed by eos); returns self."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an int >= 1, got {vocab_size!r}")
        vocab_size = int(vocab_size)
        if vocab_size**self.order > _INT64_MAX:
            raise ValueError(
                f"vocab_size**order = {vocab_size}**{self.order} overflows int64 n-gram keys; "
                f"use a smaller order or vocabulary (need vocab_size**order <= {_INT64_MAX})"
            )
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int in [0, {vocab_size}), got {value!r}")
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
        if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
            sequences = list(sequences)
        if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Sequence | np.ndarray):
            raise ValueError("sequences must be a sequence of sequences of int token ids")
        if len(sequences) == 0:
            raise ValueError("fit needs at least one training sequence, got none")
        n, size = self.order, vocab_size
        bos, eos = int(bos_id), int(eos_id)

        pieces: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        offset = 0
        pad = np.full(n - 1, bos, dtype=np.int64)
        end = np.array([eos], dtype=np.int64)
        for i, seq in enumerate(sequences):
            arr = np.asarray(seq)
            if arr.size == 0:
                arr = arr.astype(np.int64)
            if arr.ndim != 1:
                raise ValueError(f"sequence {i} must be a 1-D sequence of token ids, got shape {arr.shape}")
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"sequence {i} must hold integer token ids, got dtype {arr.dtype}")
            arr = arr.astype(np.int64, copy=False)
            if arr.size and (arr.min() < 0 or arr.max() >= size):
                bad = arr[(arr < 0) | (arr >= size)][0]
                raise ValueError(f"sequence {i} holds token id {bad}, outside the vocabulary [0, {size})")
            padded = np.concatenate([pad, arr, end])
            pieces.append(padded)
            starts.append(offset + np.arange(arr.size + 1, dtype=np.int64))
            offset += padded.size
        flat = np.concatenate(pieces)
        start = np.concatenate(starts)
        windows = flat[start[:, None] + np.arange(n)]  # [num_ngrams, n]
        powers = size ** np.arange(n - 1, -1, -1, dtype=np.int64)
        keys = (windows * powers).sum(axis=1)

        gram_keys: list[np.ndarray] = [np.empty(0, np.int64)] * n
        gram_counts: list[np.ndarray] = [np.empty(0, np.int64)] * n
        uniq, counts = np.unique(keys, return_counts=True)
        gram_keys[n - 1], gram_counts[n - 1] = uniq, counts.astype(np.int64)
        for k in range(n - 1, 0, -1):  # level k from the distinct (k + 1)-grams
            suffix = gram_keys[k] % (size**k)
            uniq, counts = np.unique(suffix, return_counts=True)
            gram_keys[k - 1], gram_counts[k - 1] = uniq, counts.astype(np.int64)

        self.vocab_size, self.bos_id, self.eos_id = size, bos, eos
        self._gram_keys, self._gram_counts = gram_keys, gram_counts
        self.discounts = [
            self.discount if self.discount is not None else _estimate_discount(c) for c in gram_counts
        ]
        self._build_history_tables()
        return self

    def _build_history_tables(self) -> None:
        size = self.vocab_size
        self._hist_keys, self._hist_totals, self._hist_types = [], [], []
        for keys, counts in zip(self._gram_keys, self._gram_counts, strict=True):
            hist = keys // size
            uniq, inverse, types = np.unique(hist, return_inverse=True, return_counts=True)
            totals = np.bincount(inverse.ravel(), weights=counts, minlength=uniq.size)
            self._hist_keys.append(uniq.astype(np.int64))
            self._hist_totals.append(np.rint(totals).astype(np.int64))
            self._hist_types.append(types.astype(np.int64))

    # ------------------------------------------------------------------ validation helpers

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError(
                "KneserNeyLM is not fitted; call fit(sequences, vocab_size, bos_id, eos_id) first"
            )

    def _check_ids(self, arr: np.ndarray, name: str) -> np.ndarray:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = arr[(arr < 0) | (arr >= self.vocab_size)].flat[0]
            raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {self.vocab_size})")
        return arr

    def _check_contexts(self, contexts) -> np.ndarray:
        ctx = np.asarray(contexts)
        if ctx.size == 0 and ctx.ndim == 2:
            ctx = ctx.astype(np.int64)
        if ctx.ndim != 2 or ctx.shape[1] != self.order - 1:
            raise ValueError(
                f"contexts must have shape [B, order-1] = [B, {self.order - 1}] "
                f"(the previous ids, bos-padded), got shape {ctx.shape}"
            )
        return self._check_ids(ctx, "contexts")

    # ------------------------------------------------------------------ core

    def _probs(self, ctx: np.ndarray, next_ids: np.ndarray) -> np.ndarray:
        """``P_n(next | ctx)`` for ctx [B, n-1] and next_ids broadcastable against [B, 1]; float64."""
        size, n = self.vocab_size, self.order
        batch = ctx.shape[0]
        p = np.full(np.broadcast_shapes((batch, 1), next_ids.shape), 1.0 / size)
        hist_key = np.zeros((batch, 1), dtype=np.int64)  # history of length k - 1 (empty for k = 1)
        for k in range(1, n + 1):
            if k > 1:
                hist_key = hist_key + ctx[:, n - k : n - k + 1] * np.int64(size ** (k - 2))
            idx = k - 1
            total = _lookup(self._hist_keys[idx], self._hist_totals[idx], hist_key).astype(np.float64)
            types = _lookup(self._hist_keys[idx], self._hist_types[idx], hist_key).astype(np.float64)
            count = _lookup(self._gram_keys[idx], self._gram_counts[idx], hist_key * size + next_ids)
            d = self.discounts[idx]
            seen = total > 0
            safe_total = np.where(seen, total, 1.0)
            interp = (np.maximum(count - d, 0.0) + d * types * p) / safe_total
            p = np.where(seen, interp, p)
        return p

    # ------------------------------------------------------------------ public scoring API

    def logprob(self, contexts: np.ndarray, next_ids: np.ndarray) -> np.ndarray:
        """Natural-log ``P(next_ids[b] | contexts[b])``; contexts int [B, order-1], next_ids [B] -> float64 [B]."""
        self._require_fitted()
        ctx = self._check_contexts(contexts)
        nxt = np.asarray(next_ids)
        if nxt.ndim != 1 or nxt.shape[0] != ctx.shape[0]:
            raise ValueError(
                f"next_ids must have shape [B] = [{ctx.shape[0]}] matching contexts, got shape {nxt.shape}"
            )
        if nxt.size == 0:
            return np.zeros(0, dtype=np.float64)
        nxt = self._check_ids(nxt, "next_ids")
        return np.log(self._probs(ctx, nxt[:, None])[:, 0])

    def next_token_logprobs(self, contexts: np.ndarray) -> np.ndarray:
        """Natural-log next-id distribution for each context: int [B, order-1] -> float64 [B, vocab_size]."""
        self._require_fitted()
        ctx = self._check_contexts(contexts)
        if ctx.shape[0] == 0:
            return np.zeros((0, self.vocab_size), dtype=np.float64)
        vocab = np.arange(self.vocab_size, dtype=np.int64)[None, :]
        return np.log(self._probs(ctx, vocab))

    def token_logprobs(self, ids: np.ndarray, lengths: np.ndarray, include_eos: bool = True) -> np.ndarray:
        """Per-position log-probs of generated sequences: float64 [B, T+1].

        Column ``t < lengths[b]`` scores ``ids[b, t]`` given its bos-padded left context; column
        ``lengths[b]`` scores eos when ``include_eos`` (else 0); columns beyond are 0. Entries of ``ids`` at
        or beyond ``lengths[b]`` are padding and are ignored (any value).
        """
        self._require_fitted()
        arr = np.asarray(ids)
        if arr.ndim != 2:
            raise ValueError(f"ids must have shape [B, T], got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids must hold integer token ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        batch, width = arr.shape
        lens = np.asarray(lengths)
        if lens.ndim != 1 or lens.shape[0] != batch:
            raise ValueError(f"lengths must have shape [B] = [{batch}] matching ids, got shape {lens.shape}")
        if lens.size and not np.issubdtype(lens.dtype, np.integer):
            raise ValueError(f"lengths must be integers, got dtype {lens.dtype}")
        lens = lens.astype(np.int64, copy=False)
        if lens.size and (lens.min() < 0 or lens.max() > width):
            raise ValueError(
                f"lengths must lie in [0, T] = [0, {width}], got min {lens.min()} max {lens.max()}"
            )
        pos = np.arange(width + 1, dtype=np.int64)[None, :]
        in_seq = pos[:, :width] < lens[:, None]  # [B, T]
        self._check_ids(arr[in_seq], "ids")
        # Targets: ids inside the sequence, eos at position lengths[b], a harmless id elsewhere.
        targets = np.full((batch, width + 1), self.eos_id, dtype=np.int64)
        targets[:, :width] = np.where(in_seq, arr, self.eos_id)
        n = self.order
        padded = np.concatenate([np.full((batch, n - 1), self.bos_id, dtype=np.int64), targets], axis=1)
        # context of position t = padded[:, t : t + n - 1]
        cols = pos[0][:, None] + np.arange(n - 1, dtype=np.int64)[None, :]  # [T+1, n-1]
        contexts = padded[:, cols].reshape(batch * (width + 1), n - 1)
        valid = pos <= lens[:, None] if include_eos else pos < lens[:, None]
        out = np.zeros((batch, width + 1), dtype=np.float64)
        flat_valid = valid.ravel()
        if flat_valid.any():
            probs = self._probs(contexts[flat_valid], targets.ravel()[flat_valid][:, None])[:, 0]
            out[valid] = np.log(probs)
        return out

    def sequence_logprob(self, ids: np.ndarray, lengths: np.ndarray, include_eos: bool = True) -> np.ndarray:
        """Total natural-log probability of each generated sequence (plus eos when ``include_eos``): [B]."""
        return self.token_logprobs(ids, lengths, include_eos=include_eos).sum(axis=1)

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        """Plain JSON-able data (ints, floats, lists) from which :meth:`from_dict` rebuilds the model."""
        self._require_fitted()
        return {
            "format": _FORMAT,
            "order": self.order,
            "discount": self.discount,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "discounts": [float(d) for d in self.discounts],
            "gram_keys": [k.tolist() for k in self._gram_keys],
            "gram_counts": [c.tolist() for c in self._gram_counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> KneserNeyLM:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a KneserNeyLM dict (missing format {_FORMAT!r})")
        model = cls(order=data["order"], discount=data["discount"])
        n = model.order
        if len(data["gram_keys"]) != n or len(data["gram_counts"]) != n or len(data["discounts"]) != n:
            raise ValueError(
                f"a KneserNeyLM dict of order {n} needs {n} levels of keys, counts and discounts"
            )
        model.vocab_size = int(data["vocab_size"])
        model.bos_id, model.eos_id = int(data["bos_id"]), int(data["eos_id"])
        model.discounts = [float(d) for d in data["discounts"]]
        model._gram_keys = [np.asarray(k, dtype=np.int64) for k in data["gram_keys"]]
        model._gram_counts = [np.asarray(c, dtype=np.int64) for c in data["gram_counts"]]
        model._build_history_tables()
        return model

    def __repr__(self) -> str:
        if not self.is_fitted:
            return f"KneserNeyLM(order={self.order}, unfitted)"
        sizes = ", ".join(str(k.size) for k in self._gram_keys)
        return f"KneserNeyLM(order={self.order}, vocab_size={self.vocab_size}, ngrams=[{sizes}])"
