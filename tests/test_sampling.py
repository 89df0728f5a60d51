"""The project's one sampler (agents.sampling): the keyed uniforms are the hash they claim to be, the draws
follow the distribution exactly, ids of probability 0 are never drawn, and a row's draw depends on its key
only (not on the other rows of its batch)."""

from __future__ import annotations

import math

import pytest
import torch

from agents.sampling import KeyedSampler, keyed_uniforms, sample_logits, sample_with_uniforms

MASK32 = 0xFFFFFFFF


def lowbias32(x: int) -> int:
    """Plain-Python reference of the mixer (no tensors, no 16-bit splitting)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def reference_uniform(seed: int, stream: int, row: int, step: int) -> float:
    hash_ = 0
    for word, offset in zip(
        (seed, stream, row, step), (0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F), strict=True
    ):
        word = (word ^ (word >> 32)) & MASK32  # non-negative words: the high half folded in
        hash_ = lowbias32(hash_ ^ ((word + offset) & MASK32))
    return (hash_ >> 8) / 2**24


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 7])
def test_keyed_uniforms_are_the_hash_of_the_key(seed):
    rows, steps = torch.arange(0, 3000, 37), torch.tensor([0, 1, 5, 63, 1000])
    got = keyed_uniforms(seed, 3, rows[:, None], steps[None, :])
    assert got.shape == (len(rows), len(steps)) and got.dtype == torch.float32
    want = torch.tensor([[reference_uniform(seed, 3, int(r), int(t)) for t in steps] for r in rows])
    assert torch.equal(got, want)


def test_keyed_uniforms_differ_by_every_part_of_the_key_and_are_uniform():
    rows = torch.arange(200_000)
    base = keyed_uniforms(0, 0, rows, 0)
    for other in (
        keyed_uniforms(1, 0, rows, 0),
        keyed_uniforms(0, 1, rows, 0),
        keyed_uniforms(0, 0, rows, 1),
    ):
        assert (other != base).float().mean() > 0.999
    # Swapping the key's parts changes the uniform (each part has its own offset).
    assert float(keyed_uniforms(0, 1, torch.tensor([2]), 3)) != float(
        keyed_uniforms(0, 2, torch.tensor([1]), 3)
    )
    assert 0.0 <= float(base.min()) and float(base.max()) < 1.0
    # Mean and the ten deciles of a uniform, within ~5 standard errors.
    assert abs(float(base.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / len(rows))
    deciles = torch.histc(base, bins=10, min=0.0, max=1.0) / len(rows)
    assert torch.allclose(deciles, torch.full((10,), 0.1), atol=5 * math.sqrt(0.09 / len(rows)))


def test_the_draw_inverts_the_cumulative_distribution():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(64, 9, dtype=torch.float64), -1)
    uniforms = torch.rand(64, dtype=torch.float64).float()
    got = sample_with_uniforms(probs.float(), uniforms)
    cdf = probs.cumsum(-1)
    # The first id whose cumulative probability exceeds the uniform (float64 reference).
    want = (cdf <= uniforms.double()[:, None]).sum(-1)
    assert torch.equal(got, want)


def test_draws_follow_the_distribution():
    """A chi-square test over 400,000 keyed draws from one fixed distribution (fixed keys: deterministic)."""
    logits = torch.tensor([2.0, 0.0, -1.0, 1.5, -4.0, 0.5])
    n = 400_000
    draws = sample_logits(logits.expand(n, -1), keyed_uniforms(7, 0, torch.arange(n), 0))
    counts = torch.bincount(draws, minlength=6).double()
    expected = torch.softmax(logits.double(), -1) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # the 0.999 quantile of chi-square with 5 degrees of freedom


def test_ids_of_probability_zero_are_never_drawn_even_at_the_edges():
    logits = torch.tensor([[float("-inf"), 1.0, float("-inf"), 2.0, float("-inf"), float("-inf")]] * 4)
    uniforms = torch.tensor([0.0, 2.0**-24, 0.5, 1.0 - 2.0**-24])
    assert sample_logits(logits, uniforms).tolist() == [1, 1, 3, 3]
    one_hot = torch.full((2, 5), float("-inf"))
    one_hot[:, 4] = 0.0
    assert sample_logits(one_hot, torch.tensor([0.0, 1.0 - 2.0**-24])).tolist() == [4, 4]


def test_a_rows_draw_does_not_depend_on_the_other_rows():
    torch.manual_seed(0)
    logits = torch.randn(10, 50)
    sampler = KeyedSampler(seed=3, stream=2, row_keys=torch.arange(100, 110), width=8)
    whole = torch.stack([sampler.sample(logits, t) for t in range(8)], 1)
    rows = torch.tensor([1, 4, 9])
    part = torch.stack([sampler.sample(logits[rows], t, rows) for t in range(8)], 1)
    assert torch.equal(part, whole[rows])
    # A pass keyed by the same global indices but holding only those rows draws the same.
    alone = KeyedSampler(seed=3, stream=2, row_keys=100 + rows, width=8)
    assert torch.equal(torch.stack([alone.sample(logits[rows], t) for t in range(8)], 1), whole[rows])
