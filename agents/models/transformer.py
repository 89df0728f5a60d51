"""A plain transformer in the spirit of nanoGPT's ``model.py``: a config, attention, MLP, block, model.

Two architectures share the blocks:

- ``"causal"`` (decoder-only): one sequence ``[prompt ; bos ; y_1 .. y_T]``. Prompts are *left*-padded
  inside the model so that generated tokens line up in one column across the batch; pad positions are
  masked out as keys and get position ids that skip them.
- ``"seq2seq"`` (encoder-decoder, as in Vaswani et al. 2017): the encoder reads ``[bos ; prompt]`` with
  bidirectional attention; the decoder reads ``[bos ; y_1 .. y_T]`` with causal self-attention plus
  cross-attention to the encoder. (The encoder's leading bos means an empty prompt still has one key.)

Both put a language-model head and a value head on the same final hidden state (one model, not a policy,
a value model and a reference model). :class:`KVCache` is the explicit state of incremental decoding.
Attention uses ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask (True = attend).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("causal", "seq2seq")


@dataclass
class TransformerConfig:
    """Sizes of a :class:`TransformerLM`.

    :param vocab_size: number of token ids (the env's ``Discrete`` size).
    :param arch: ``"causal"`` (decoder-only, prompt as prefix) or ``"seq2seq"`` (encoder-decoder).
    :param n_layer: decoder blocks (and encoder blocks, unless ``n_encoder_layer`` is set).
    :param n_head: attention heads; must divide ``n_embd``.
    :param n_embd: model width.
    :param max_positions: learned position embeddings; for ``causal`` it must cover
        prompt + 1 + new tokens, for ``seq2seq`` each side (prompt + 1, new tokens + 1).
    :param dropout: dropout probability in training (0 disables it).
    :param pad_id: / :param bos_id: the tokenizer's special ids.
    """

    vocab_size: int
    arch: str = "causal"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    max_positions: int = 128
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    n_encoder_layer: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; valid: {list(ARCHS)}")
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, else cross-attention to it."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.key_value = nn.Linear(config.n_embd, 2 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, H, T, D]"""
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.key_value(x).split(self.n_head * self.head_dim, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:param x: queries' input ``[B, Tq, C]``.
        :param mask: bool ``[B, 1, Tq, Tk]``, True where a query may attend to a key; or the additive float
            bias of :func:`biased_attention` (a decode step's, a short sequence's on CPU).
        :param keys: / :param values: ``[B, H, Tk, D]``; None = computed from ``x`` (self-attention).
        :return: ``[B, Tq, C]``.
        """
        q = self.split_heads(self.query(x))
        if keys is None:
            keys, values = self.keys_values(x)
        if mask.dtype != torch.bool:
            y = biased_attention(q, keys, values, mask)
        else:
            y = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        b, _, t, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, -1)))


# Up to this many keys, attention runs as two batched matrix products (biased_attention) rather than
# scaled_dot_product_attention, whose CPU kernel is tiled for long sequences. Measured on one thread of an
# Intel Xeon (forward + backward, 4 heads of 32): 64 x 25 keys 4.8 ms vs 6.7, 16 x 40 keys 1.9 vs 2.7;
# at 256 x 81 keys the kernel wins (126 vs 145 ms).
SHORT_ATTENTION_KEYS = 64


def biased_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Attention of ``q [B, H, Tq, D]`` over ``keys`` / ``values`` ``[B, H, S, D]`` (may be strided views
    into the KV cache's buffers, read in place) with the additive ``bias [B, 1 or H, Tq, S]`` (0 or -inf;
    every query needs one finite entry): two batched matrix products, no dropout.

    A decode step's attention (``Tq = 1``) and every short sequence's: ``scaled_dot_product_attention``
    costs ~3x more for one query on CPU (1.9 ms vs 0.7 ms for B 256, 4 heads of 32, 48 keys, one thread):
    its CPU kernel is tiled for long queries and copies the strided cache slice first.
    """
    b, h, tq, d = q.shape
    s = keys.shape[2]
    scores = torch.baddbmm(
        bias.expand(b, h, tq, s).reshape(b * h, tq, s),
        q.reshape(b * h, tq, d),
        keys.transpose(-1, -2).reshape(b * h, d, s),
        alpha=d**-0.5,
    )
    return torch.bmm(key_softmax(scores), values.reshape(b * h, s, d)).view(b, h, tq, d)


# torch's CPU softmax runs ~10x slower per entry when the last dimension is shorter than 16 (one AVX-512
# vector of floats): torch 2.13, one thread of an Intel Xeon, softmax of [896, 14] 182 us, of [896, 16]
# 13 us, backward alike. Short sequences and the first decode steps attend over fewer keys than that.
SOFTMAX_MIN_KEYS = 16


def key_softmax(scores: torch.Tensor) -> torch.Tensor:
    """``scores.softmax(-1)`` in float32; on CPU over fewer than :data:`SOFTMAX_MIN_KEYS` keys, computed
    over the scores padded with -inf columns to that width and sliced back (the same probabilities: a
    padded column's weight is exactly 0).

    Float32 whatever the scores' dtype: under bf16 autocast torch's CPU softmax would stay (and
    back-propagate) in bf16, where CUDA's autocast runs softmax in float32. With it, PPO from scratch in
    bf16 on the small copy task reached 1.000 / 1.000 / 0.943 for seeds 0-2, without it 0.905 / 0.979 /
    0.881 (fp32: 1.000 / 0.979 / 0.982)."""
    keys = scores.shape[-1]
    if scores.device.type != "cpu" or keys >= SOFTMAX_MIN_KEYS:
        return scores.softmax(dim=-1, dtype=torch.float32)
    padded = F.pad(scores, (0, SOFTMAX_MIN_KEYS - keys), value=float("-inf"))
    return padded.softmax(dim=-1, dtype=torch.float32)[..., :keys]


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP, each with a residual connection."""

    def __init__(self, config: TransformerConfig, cross: bool = False) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(config.n_embd)
        self.self_attn = Attention(config)
        self.ln_cross = nn.LayerNorm(config.n_embd) if cross else None
        self.cross_attn = Attention(config) if cross else None
        self.ln_mlp = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        cross: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``cache``: when given, this step's keys/values are written at its columns ``[length, length+T)``
        and attention runs over all filled columns. ``cross``: (keys, values, mask) of the encoder."""
        h = self.ln_self(x)
        if cache is None:
            x = x + self.self_attn(h, self_mask)
        else:
            k, v = self.self_attn.keys_values(h)
            end = cache.length + h.shape[1]
            cache.keys[layer][:, :, cache.length : end] = k
            cache.values[layer][:, :, cache.length : end] = v
            x = x + self.self_attn(
                h, self_mask, cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end]
            )
        if self.cross_attn is not None:
            keys, values, mask = cross
            x = x + self.cross_attn(self.ln_cross(x), mask, keys, values)
        return x + self.mlp(self.ln_mlp(x))


@dataclass
class KVCache:
    """The state of incremental decoding for a batch of B rows.

    ``keys[l]`` / ``values[l]``: ``[B, H, S, D]`` preallocated for S columns, of which ``length`` are
    filled. Columns are shared by the rows, positions are not: ``positions``: int64 ``[B]``, the position id
    of each row's next token. ``key_valid``: bool ``[B, S]``, False for a column that holds no token of that
    row (prompt padding, and the holes a ragged :meth:`TransformerLM.feed` leaves in rows given fewer
    tokens than the widest); attention never reads such a column. ``position_bound``: an upper bound on
    ``positions`` kept on the host, so that :meth:`TransformerLM.step` can refuse to run past the position
    table without reading the device. For ``seq2seq``, ``cross[l]`` holds the encoder's keys and values per
    layer and ``cross_valid`` ``[B, P + 1]`` its padding mask.

    A decode step attends with additive biases made from ``key_valid`` and ``cross_valid``
    (:meth:`step_biases`), built once and reused by the steps that follow: code that changes ``key_valid``
    in place must call :meth:`key_valid_changed`.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_valid: torch.Tensor
    positions: torch.Tensor
    length: int = 0
    cross: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    cross_valid: torch.Tensor | None = None
    position_bound: int = 0
    _step_biases: tuple[torch.Tensor, torch.Tensor | None] | None = field(default=None, repr=False)

    def step_biases(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(self_bias [B, H, 1, S], cross_bias [B, H, 1, P + 1] or None)``: 0 where a column may be read,
        -inf where not, over every column (a step slices the filled ones), one copy per head so that
        :func:`biased_attention` reads it as ``[B * H, 1, S]`` without copying it. Made once per change of
        ``key_valid``: four kernels per step fewer, which shows at small batches."""
        if self._step_biases is None:
            heads = self.keys[0].shape[1]

            def per_head(valid: torch.Tensor) -> torch.Tensor:
                bias = additive_bias(valid[:, None, None, :])
                return bias.expand(-1, heads, -1, -1).contiguous()

            cross = None if self.cross_valid is None else per_head(self.cross_valid)
            self._step_biases = (per_head(self.key_valid), cross)
        return self._step_biases

    def key_valid_changed(self) -> None:
        """Say that ``key_valid`` was changed in place (the step biases are made anew when next needed)."""
        self._step_biases = None

    @property
    def capacity(self) -> int:
        return self.key_valid.shape[1]

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` more columns, growing by at least half the capacity (amortised O(1)
        per token) when the preallocated room is short."""
        missing = self.length + columns - self.capacity
        if missing <= 0:
            return
        extra = max(missing, self.capacity // 2)
        b, h, _, d = self.keys[0].shape

        def grow(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x.new_zeros(b, h, extra, d)], dim=2)

        self.keys = [grow(k) for k in self.keys]
        self.values = [grow(v) for v in self.values]
        self.key_valid = torch.cat([self.key_valid, self.key_valid.new_ones(b, extra)], dim=1)
        self.key_valid_changed()

    def reorder(self, index: torch.Tensor) -> KVCache:
        """A cache whose row i is this cache's row ``index[i]`` (beam search: select and repeat rows)."""
        return KVCache(
            keys=[k.index_select(0, index) for k in self.keys],
            values=[v.index_select(0, index) for v in self.values],
            key_valid=self.key_valid.index_select(0, index),
            positions=self.positions.index_select(0, index),
            length=self.length,
            cross=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross],
            cross_valid=None if self.cross_valid is None else self.cross_valid.index_select(0, index),
            position_bound=self.position_bound,
        )


def left_pad(ids: torch.Tensor, lengths: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Move each row's first ``lengths[b]`` ids to the right end: ``[B, P]`` right- to left-padded."""
    width = ids.shape[1]
    shift = (width - lengths)[:, None]
    source = (torch.arange(width, device=ids.device)[None, :] - shift) % width
    out = ids.gather(1, source)
    return out.masked_fill(torch.arange(width, device=ids.device)[None, :] < shift, pad_id)


def attention_mask(query_valid_pos: torch.Tensor, key_valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """bool ``[B, 1, Tq, Tk]``: keys must be valid and (if causal) not in the future.

    :param query_valid_pos: int64 ``[Tq]``, the key column of each query (for causal masking).
    :param key_valid: bool ``[B, Tk]``.
    A query whose every key is masked would make softmax undefined (NaN); such queries (padding) may attend
    to their own column, and their outputs are never used.
    """
    tk = key_valid.shape[1]
    cols = torch.arange(tk, device=key_valid.device)
    mask = key_valid[:, None, None, :].expand(-1, 1, query_valid_pos.shape[0], -1)
    if causal:
        mask = mask & (cols[None, :] <= query_valid_pos[:, None])[None, None]
    own = cols[None, :] == query_valid_pos[:, None]
    return mask | own[None, None]


def additive_bias(mask: torch.Tensor) -> torch.Tensor:
    """The float bias of a bool mask, same shape: 0 where ``mask`` holds, -inf elsewhere."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))


class TransformerLM(nn.Module):
    """Decoder-only or encoder-decoder transformer with an LM head and a value head on one trunk.

    Conventions: prompts arrive right-padded (``prompt_ids [B, P]`` with ``prompt_lengths [B]``), as the
    environments give them; the decoder side starts with ``bos``; decoder output ``t`` (t = 0..T)
    predicts target token ``t`` (the first output, at ``bos``, predicts ``y_1``).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.position_embedding = nn.Embedding(c.max_positions, c.n_embd)
        self.dropout = nn.Dropout(c.dropout)
        seq2seq = c.arch == "seq2seq"
        self.encoder = (
            nn.ModuleList(Block(c) for _ in range(c.n_encoder_layer or c.n_layer)) if seq2seq else None
        )
        self.ln_encoder = nn.LayerNorm(c.n_embd) if seq2seq else None
        self.decoder = nn.ModuleList(Block(c, cross=seq2seq) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying, as in GPT-2 / nanoGPT
        self.value_head = nn.Linear(c.n_embd, 1)
        # False: the value head reads detached trunk features, so the value loss trains the head only (set by
        # an algorithm's value_trunk_gradient; not part of the checkpoint).
        self.value_trunk_gradient = True
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def check_lengths(self, prompt_width: int, new_tokens: int) -> None:
        """Raise ValueError unless prompts of ``prompt_width`` plus ``new_tokens`` fit the position table.

        Checked from the shapes (no device sync), so decoding stays asynchronous on a GPU.
        """
        c = self.config
        if c.arch == "causal":
            needed = prompt_width + 1 + new_tokens
            what = f"prompt ({prompt_width}) + bos + new tokens ({new_tokens})"
        else:
            needed = max(prompt_width, new_tokens) + 1
            what = f"bos + the longer of prompt ({prompt_width}) and new tokens ({new_tokens})"
        if needed > c.max_positions:
            raise ValueError(f"{what} = {needed} positions exceed max_positions={c.max_positions}")

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.config.pad_id >= self.config.vocab_size:
            # A Hugging Face tokenizer's env-only pad id (= vocab_size) has no row in the (tied) table; pad
            # positions are masked out of every attention, so any row serves.
            ids = ids.masked_fill(ids == self.config.pad_id, 0)
        return self.dropout(self.token_embedding(ids) + self.position_embedding(positions))

    def _short_bias(self, mask: torch.Tensor) -> torch.Tensor:
        """A bool attention mask ``[B, 1, Tq, Tk]`` as the additive bias of :func:`biased_attention` when
        it has at most :data:`SHORT_ATTENTION_KEYS` keys (made once, read by every layer); else unchanged
        (``scaled_dot_product_attention``, which also applies attention dropout in training). CPU only:
        the measurement behind the threshold is a CPU's; on CUDA the fused kernels stay."""
        long = mask.shape[-1] > SHORT_ATTENTION_KEYS
        if long or mask.device.type != "cpu" or (self.training and self.config.dropout > 0):
            return mask
        return additive_bias(mask)

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_autocast_enabled(h.device.type):
            # Under bf16 autocast the final norm and the heads still run in fp32: logits rounded to bf16 (8
            # significant bits) move log-probs by ~0.03 at logits of ~10, noise that lands in PPO's ratio and
            # in every policy gradient (small copy PPO from scratch, seeds 0-2: 0.909 / 0.950 / 0.965 with
            # bf16 heads, 0.979 / 0.982 / 0.982 with fp32 ones; fp32 throughout 1.000 / 0.982 / 0.982). The
            # MiniMax-M1 report (2025) found the same train / inference probability mismatch and fixed it
            # with an fp32 LM head.
            with torch.autocast(h.device.type, enabled=False):
                return self._heads(h.float())
        h = self.ln_f(h)
        return self.lm_head(h), self.value_head(h if self.value_trunk_gradient else h.detach()).squeeze(-1)

    # ------------------------------------------------------------------ encoder (seq2seq)

    def _encode(self, prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor):
        """Encoder keys/values per decoder layer and their mask ``[B, 1, 1, P + 1]``."""
        b, p = prompt_ids.shape
        bos = torch.full((b, 1), self.config.bos_id, dtype=torch.long, device=prompt_ids.device)
        ids = torch.cat([bos, prompt_ids.long()], dim=1)
        valid = torch.arange(p + 1, device=ids.device)[None, :] <= prompt_lengths[:, None]
        positions = torch.arange(p + 1, device=ids.device)[None, :].expand(b, -1)
        x = self._embed(ids, positions)
        mask = self._short_bias(valid[:, None, None, :])
        for block in self.encoder:
            x = block(x, mask)
        memory = self.ln_encoder(x)
        cross = [block.cross_attn.keys_values(memory) for block in self.decoder]
        return cross, valid

    # ------------------------------------------------------------------ teacher forcing

    def hidden_states(
        self, prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor, target_ids: torch.Tensor
    ) -> torch.Tensor:
        """The decoder's last block output ``[B, T + 1, C]`` (before ``ln_f``) over ``[bos ; targets]``.

        For callers that need a few positions only (the SB3 features extractor): the heads on every
        position would build ``[B, T + 1, V]`` logits. Arguments as in :meth:`forward`.
        """
        b, t = target_ids.shape
        dev = target_ids.device
        self.check_lengths(prompt_ids.shape[1], t)
        bos = torch.full((b, 1), self.config.bos_id, dtype=torch.long, device=dev)
        decoder_ids = torch.cat([bos, target_ids.long()], dim=1)
        if self.config.arch == "seq2seq":
            cross_kv, cross_valid = self._encode(prompt_ids, prompt_lengths)
            positions = torch.arange(t + 1, device=dev)[None, :].expand(b, -1)
            x = self._embed(decoder_ids, positions)
            cols = torch.arange(t + 1, device=dev)
            mask = attention_mask(cols, torch.ones(b, t + 1, dtype=torch.bool, device=dev), causal=True)
            mask, cross_mask = self._short_bias(mask), self._short_bias(cross_valid[:, None, None, :])
            for layer, block in enumerate(self.decoder):
                x = block(x, mask, cross=(*cross_kv[layer], cross_mask))
            return x
        p = prompt_ids.shape[1]
        ids = torch.cat([left_pad(prompt_ids.long(), prompt_lengths, self.config.pad_id), decoder_ids], dim=1)
        valid = torch.ones_like(ids, dtype=torch.bool)
        valid[:, :p] = torch.arange(p, device=dev)[None, :] >= (p - prompt_lengths)[:, None]
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        x = self._embed(ids, positions)
        mask = self._short_bias(attention_mask(torch.arange(ids.shape[1], device=dev), valid, causal=True))
        for block in self.decoder:
            x = block(x, mask)
        return x[:, p:]

    def forward(
        self, prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor, target_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score whole sequences in one pass.

        :param prompt_ids: int ``[B, P]`` right-padded; :param prompt_lengths: int ``[B]``.
        :param target_ids: int ``[B, T]`` tokens after bos (padding beyond each row's end is harmless:
            causal masking keeps it out of earlier positions).
        :return: ``(logits [B, T + 1, V], values [B, T + 1])``; output t is computed after target t-1
            (output 0 after bos).
        """
        return self._heads(self.hidden_states(prompt_ids, prompt_lengths, target_ids))

    # ------------------------------------------------------------------ incremental decoding

    def start(
        self, prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor, max_new_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor, KVCache]:
        """Read the prompts and bos; return ``(logits [B, V], values [B], cache)`` for the first new token.

        The cache is allocated with room for ``max_new_tokens`` further tokens (:meth:`step` and :meth:`feed`
        grow it when they need more).
        """
        b, p = prompt_ids.shape
        c, dev = self.config, prompt_ids.device
        dtype = self.token_embedding.weight.dtype
        if torch.is_autocast_enabled(dev.type):
            # Under autocast the keys and values come out of the linear layers in its dtype: keep them so
            # (half the bytes that every decode step reads back).
            dtype = torch.get_autocast_dtype(dev.type)
        head_dim = c.n_embd // c.n_head
        self.check_lengths(p, max_new_tokens)
        bos = torch.full((b, 1), c.bos_id, dtype=torch.long, device=dev)
        if c.arch == "seq2seq":
            cross_kv, cross_valid = self._encode(prompt_ids, prompt_lengths)
            capacity = 1 + max_new_tokens
            ids, positions = bos, torch.zeros(b, 1, dtype=torch.long, device=dev)
            valid = torch.ones(b, capacity, dtype=torch.bool, device=dev)
        else:
            cross_kv, cross_valid = [], None
            capacity = p + 1 + max_new_tokens
            ids = torch.cat([left_pad(prompt_ids.long(), prompt_lengths, c.pad_id), bos], dim=1)
            valid = torch.ones(b, capacity, dtype=torch.bool, device=dev)
            valid[:, :p] = torch.arange(p, device=dev)[None, :] >= (p - prompt_lengths)[:, None]
            positions = (valid[:, : p + 1].long().cumsum(1) - 1).clamp(min=0)
        shape = (b, c.n_head, capacity, head_dim)
        cache = KVCache(
            # Uninitialised (zero-filling them was ~2% of a rollout): a column is always written before
            # attention reads it (the prompt pass writes the first p + 1, each step or feed its own).
            keys=[torch.empty(shape, dtype=dtype, device=dev) for _ in self.decoder],
            values=[torch.empty(shape, dtype=dtype, device=dev) for _ in self.decoder],
            key_valid=valid,
            positions=positions[:, -1] + 1,
            cross=cross_kv,
            cross_valid=cross_valid,
            # From the shapes: bos sits at most at position p (causal, a full prompt) or 0 (seq2seq).
            position_bound=ids.shape[1],
        )
        # The heads read the last position only: logits over every prompt position would cost a
        # [B, P + 1, V] product that nothing reads.
        logits, values = self._heads(self._decode_cached(self._embed(ids, positions), cache)[:, -1])
        return logits, values, cache

    def step(self, cache: KVCache, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, KVCache]:
        """Feed one token per row (int ``[B]``); return ``(logits [B, V], values [B], cache)``."""
        if cache.position_bound >= self.config.max_positions:
            raise ValueError(
                f"a row's next token would be at position {cache.position_bound}, beyond "
                f"max_positions={self.config.max_positions}; start with fewer max_new_tokens or build a "
                "model with more positions"
            )
        cache.reserve(1)
        positions = cache.positions[:, None]
        h = self._decode_cached(self._embed(tokens.long()[:, None], positions), cache)
        logits, values = self._heads(h[:, 0])
        cache.positions = cache.positions + 1
        cache.position_bound += 1
        return logits, values, cache

    def feed(
        self, cache: KVCache, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, KVCache]:
        """Feed forced tokens, a different number per row: row b reads ``tokens[b, :lengths[b]]``.

        The K = ``tokens.shape[1]`` tokens fill K new columns of every row; a row's columns beyond its
        ``lengths[b]`` are holes (``key_valid`` False), its position ids count its real tokens only, so a row
        ends up as if it had read its tokens alone (attention ignores which columns hold them).

        :param tokens: int ``[B, K]``, K >= 1; :param lengths: int ``[B]`` in ``[0, K]``.
        :return: ``(logits [B, V], values [B], cache)`` after each row's last token; rows given no token
            get the outputs of their first column, which the caller must ignore (they read nothing new).
        :raises ValueError: when a row would run past the position table (one host read: feeding is per
            turn, not per token).
        """
        b, k = tokens.shape
        dev = tokens.device
        lengths = lengths.to(dev).long()
        end = int((cache.positions + lengths).max()) if b else cache.position_bound
        if end > self.config.max_positions:
            raise ValueError(
                f"feeding these tokens takes a row to {end} positions, beyond max_positions="
                f"{self.config.max_positions}"
            )
        cache.reserve(k)
        cols = torch.arange(k, device=dev)
        real = cols[None, :] < lengths[:, None]
        cache.key_valid[:, cache.length : cache.length + k] = real
        cache.key_valid_changed()
        # A hole repeats its row's last real position (clamped into the table): its output is never read.
        offsets = torch.minimum(cols[None, :], (lengths[:, None] - 1).clamp(min=0))
        positions = (cache.positions[:, None] + offsets).clamp(max=self.config.max_positions - 1)
        # Whatever a hole holds (padding of any value) is read as id 0: only a valid id can be embedded.
        x = self._embed(torch.where(real, tokens.long(), 0), positions)
        h = self._decode_cached(x, cache)
        last = h[torch.arange(b, device=dev), (lengths - 1).clamp(min=0)]
        cache.positions = cache.positions + lengths
        cache.position_bound = end
        logits, values = self._heads(last)
        return logits, values, cache

    def _decode_cached(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run the decoder over embedded inputs ``[B, T, C]`` written at columns ``[length, length + T)``
        of ``cache`` (which must have room); returns the last block's output ``[B, T, C]``."""
        end = cache.length + x.shape[1]
        if x.shape[1] == 1 and not (self.training and self.config.dropout > 0):
            # A decode step: its one query per row may read every filled column (all are in its past), so
            # the mask is the columns' validity, as one additive bias shared by the layers.
            self_bias, cross_mask = cache.step_biases()
            mask = self_bias[..., :end]
        else:
            mask = self._short_bias(
                attention_mask(
                    torch.arange(cache.length, end, device=x.device), cache.key_valid[:, :end], True
                )
            )
            cross_mask = (
                None if cache.cross_valid is None else self._short_bias(cache.cross_valid[:, None, None, :])
            )
        for layer, block in enumerate(self.decoder):
            cross = (*cache.cross[layer], cross_mask) if cache.cross else None
            x = block(x, mask, cache=cache, layer=layer, cross=cross)
        cache.length = end
        return x
