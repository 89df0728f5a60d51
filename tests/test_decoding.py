"""Tests for batched greedy decoding, sampling and beam search (agents.decoding).

The model is a tiny fake :class:`IncrementalModel`: next-token logits are looked up in a table indexed by
the previous two tokens (the prompt's last tokens at the start), its state is the ``[rows, 2]`` tensor of
those tokens and ``reorder`` is ``index_select``. Vocabulary: 0 pad (invalid), 1 eos, 2..4 real tokens.
"""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch

from agents.decoding import (
    DEFAULT_LENGTH_PENALTY,
    DecodeOutput,
    IncrementalModel,
    beam_search,
    greedy_decode,
    length_normalised_score,
    sample_decode,
)

V = 5
PAD, EOS = 0, 1
INVALID = (PAD,)
VALID = (1, 2, 3, 4)  # eos and the three real tokens
T = 4
PROMPTS = [[2], [3, 4], [4, 2, 3], [2, 2, 4, 3], [1, 4]]


pytestmark = pytest.mark.usefixtures("one_thread")


class TableModel:
    """Next-token logits ``table[prev2, prev1]`` (``[V]``); records what it is fed."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # [V, V, V]: prev2, prev1 -> logits
        self.fed: list[torch.Tensor] = []
        self.num_steps = 0

    def start(self, prompt_ids, prompt_lengths):
        positions = prompt_lengths[:, None] - torch.tensor([2, 1])  # [B, 2], -1 before a 1-token prompt
        prev = prompt_ids.gather(1, positions.clamp(min=0))
        prev = torch.where(positions >= 0, prev, PAD)
        return self.table[prev[:, 0], prev[:, 1]], prev

    def step(self, state, tokens):
        assert tokens.dtype == torch.long and tokens.shape == (state.shape[0],)
        self.num_steps += 1
        self.fed.append(tokens.clone())
        state = torch.cat([state[:, 1:], tokens[:, None]], dim=1)
        return self.table[state[:, 0], state[:, 1]], state

    def reorder(self, state, index):
        return state.index_select(0, index)

    # --- references, one prompt and one sequence at a time -------------------------------------------
    def context(self, prompt: list[int]) -> tuple[int, int]:
        padded = [PAD, PAD, *prompt]
        return padded[-2], padded[-1]

    def log_probs(self, context: tuple[int, int], invalid=INVALID) -> torch.Tensor:
        logits = self.table[context[0], context[1]].clone()
        logits[list(invalid)] = -math.inf
        return torch.log_softmax(logits, dim=-1)

    def sequence_log_prob(self, prompt: list[int], tokens: list[int], finished: bool) -> float:
        context, total = self.context(prompt), 0.0
        for token in [*tokens, EOS] if finished else tokens:
            total += float(self.log_probs(context)[token])
            context = (context[1], token)
        return total


def random_model(seed: int, scale: float = 2.0) -> TableModel:
    generator = torch.Generator().manual_seed(seed)
    return TableModel(torch.randn(V, V, V, generator=generator) * scale)


def batch_prompts(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with PAD: int64 [B, P] and lengths [B]."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [PAD] * (width - len(p)) for p in prompts])
    return ids, torch.tensor([len(p) for p in prompts])


def hypotheses(out: DecodeOutput, b: int) -> list[tuple[tuple[int, ...], bool]]:
    return [
        (tuple(out.tokens[b, i, : out.lengths[b, i]].tolist()), bool(out.finished[b, i]))
        for i in range(out.tokens.shape[1])
    ]


def enumerate_all(model: TableModel, prompt: list[int], steps: int, alpha: float):
    """Every hypothesis of at most ``steps`` tokens: (score, log_prob, tokens, finished), best first."""
    result = []
    real = [v for v in VALID if v != EOS]
    for n in range(steps + 1):
        for tokens in itertools.product(real, repeat=n):
            # Shorter than ``steps``: it must have ended with eos; exactly ``steps`` tokens: unfinished.
            finished = n < steps
            log_prob = model.sequence_log_prob(prompt, list(tokens), finished)
            length = n + 1 if finished else n
            score = float(length_normalised_score(torch.tensor(log_prob), torch.tensor(length), alpha))
            result.append((score, log_prob, tokens, finished))
    return sorted(result, key=lambda h: -h[0])


def greedy_reference(model: TableModel, prompt: list[int], steps: int, invalid=INVALID):
    context, tokens, total = model.context(prompt), [], 0.0
    for _ in range(steps):
        log_probs = model.log_probs(context, invalid)
        token = int(log_probs.argmax())
        total += float(log_probs[token])
        if token == EOS:
            return tokens, True, total
        tokens.append(token)
        context = (context[1], token)
    return tokens, False, total


# ------------------------------------------------------------------------------------------ protocol


def test_fake_model_is_an_incremental_model():
    assert isinstance(random_model(0), IncrementalModel)


def test_length_normalised_score():
    log_prob = torch.tensor([-2.0, -3.0, -math.inf])
    length = torch.tensor([1, 7, 3])
    assert torch.equal(length_normalised_score(log_prob, length, 0.0), log_prob)
    torch.testing.assert_close(
        length_normalised_score(log_prob, length, 1.0), torch.tensor([-2.0, -1.5, -math.inf])
    )
    torch.testing.assert_close(
        length_normalised_score(log_prob, length, 0.5), torch.tensor([-2.0, -3.0 / math.sqrt(2.0), -math.inf])
    )


# ------------------------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_step_by_step_argmax(seed):
    model = random_model(seed)
    ids, lengths = batch_prompts(PROMPTS)
    out = greedy_decode(model, ids, lengths, max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID)
    assert out.tokens.shape == (len(PROMPTS), 1, 6) and out.tokens.dtype == torch.long
    assert torch.equal(out.scores, out.log_probs)
    for b, prompt in enumerate(PROMPTS):
        tokens, finished, total = greedy_reference(model, prompt, 6)
        assert hypotheses(out, b) == [(tuple(tokens), finished)]
        assert out.lengths[b, 0] == len(tokens)
        assert out.log_probs[b, 0].item() == pytest.approx(total, abs=1e-5)
        assert (out.tokens[b, 0, len(tokens) :] == PAD).all()


def test_greedy_stops_when_all_rows_are_done():
    model = random_model(3)
    model.table[:, 2, EOS] += 20.0  # after a 2, eos for sure
    model.table[:, :, 2] += 10.0  # ... and 2 is favoured otherwise
    ids, lengths = batch_prompts([[2], [3], [4, 4]])  # first row ends at once, the others after one 2
    out = greedy_decode(model, ids, lengths, max_new_tokens=8, eos_id=EOS, invalid_ids=INVALID, pad_id=PAD)
    assert out.finished.all()
    assert out.lengths[:, 0].tolist() == [0, 1, 1]
    # Two tokens take the start and one step; then all rows are done and the model is not called again.
    assert model.num_steps == 1


@pytest.mark.parametrize("decoder", ["greedy", "sample"])
def test_finished_rows_are_fed_eos(decoder):
    model = random_model(12)
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID)
    if decoder == "greedy":
        out = greedy_decode(model, ids, lengths, **kwargs)
    else:
        out = sample_decode(
            model, ids, lengths, num_samples=6, generator=torch.Generator().manual_seed(1), **kwargs
        )
    tokens, length, finished = out.tokens.flatten(0, 1), out.lengths.flatten(), out.finished.flatten()
    assert finished.any() and (length > 0).any()
    for s, fed in enumerate(model.fed):  # fed[s]: the tokens generated at step s
        before_end = (s < length) | ~finished
        assert torch.equal(fed, torch.where(before_end, tokens[:, s], EOS)), s
    assert len(model.fed) == min(int(length.max()), 5)  # no step after the last row is done


@pytest.mark.parametrize("decoder", ["greedy", "sample", "beam"])
def test_invalid_ids_are_never_generated(decoder):
    model = random_model(4)
    model.table[..., 0] += 8.0  # the table now strongly favours the invalid ids
    model.table[..., 3] += 8.0
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=6, eos_id=EOS, pad_id=PAD)
    generated_without_mask = greedy_decode(model, ids, lengths, **kwargs).tokens
    assert (generated_without_mask == 3).any()  # the test can fail: unmasked, 3 is produced
    invalid = (0, 3)
    if decoder == "greedy":
        out = greedy_decode(model, ids, lengths, invalid_ids=invalid, **kwargs)
    elif decoder == "sample":
        gen = torch.Generator().manual_seed(0)
        out = sample_decode(model, ids, lengths, invalid_ids=invalid, num_samples=50, generator=gen, **kwargs)
    else:
        out = beam_search(model, ids, lengths, invalid_ids=invalid, beam_size=4, num_return=4, **kwargs)
    within = torch.arange(6) < out.lengths[..., None]
    generated = out.tokens[within]
    assert generated.numel() > 0
    assert not torch.isin(generated, torch.tensor(invalid)).any()
    assert torch.isfinite(out.log_probs).all()


# -------------------------------------------------------------------------------------------- beams


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_exhaustive_beam_ranks_every_hypothesis(seed, alpha):
    """With beam_size >= |V|^T nothing is pruned: the returned list is the full enumeration, best first."""
    model = random_model(seed)
    model.table[..., EOS] += 1.0  # end more often, so both finished and unfinished hypotheses compete
    beam = len(VALID) ** T
    ids, lengths = batch_prompts(PROMPTS)
    out = beam_search(
        model, ids, lengths, beam_size=beam, num_return=beam, max_new_tokens=T, eos_id=EOS,
        invalid_ids=INVALID, length_penalty=alpha,
    )  # fmt: skip
    assert out.tokens.shape == (len(PROMPTS), beam, T)
    for b, prompt in enumerate(PROMPTS):
        reference = {(h[2], h[3]): (h[0], h[1]) for h in enumerate_all(model, prompt, T, alpha)}
        n = len(reference)  # 1 + 3 + 9 + 27 finished, 81 unfinished
        assert n == 121
        got = hypotheses(out, b)[:n]
        # Every hypothesis comes back once, with its own score and log-prob, best first. (Permutations
        # with the same transitions tie exactly in this table, so the order within ties is not checked.)
        assert sorted(got) == sorted(reference)
        torch.testing.assert_close(
            out.scores[b, :n], torch.tensor([reference[h][0] for h in got]), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            out.log_probs[b, :n], torch.tensor([reference[h][1] for h in got]), atol=1e-5, rtol=0
        )
        assert (out.scores[b, : n - 1] >= out.scores[b, 1:n]).all()
        # The remaining slots are empty.
        assert (out.scores[b, n:] == -math.inf).all() and (out.log_probs[b, n:] == -math.inf).all()
        assert (
            (out.lengths[b, n:] == 0).all()
            and not out.finished[b, n:].any()
            and (out.tokens[b, n:] == PAD).all()
        )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_exhaustive_beam_finds_the_best_with_the_default_num_return(seed, alpha):
    model = random_model(seed, scale=3.0)
    ids, lengths = batch_prompts(PROMPTS)
    out = beam_search(
        model, ids, lengths, beam_size=len(VALID) ** T, max_new_tokens=T, eos_id=EOS, invalid_ids=INVALID,
        length_penalty=alpha,
    )  # fmt: skip
    assert out.tokens.shape == (len(PROMPTS), 1, T)
    for b, prompt in enumerate(PROMPTS):
        reference = enumerate_all(model, prompt, T, alpha)
        best = {(h[2], h[3]) for h in reference if h[0] >= reference[0][0] - 1e-5}  # exact ties possible
        assert hypotheses(out, b)[0] in best
        assert out.scores[b, 0].item() == pytest.approx(reference[0][0], abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_equals_greedy(seed):
    model = random_model(seed)
    model.table[..., EOS] -= 1.0  # end less often, so some rows hit max_new_tokens
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=7, eos_id=EOS, invalid_ids=INVALID)
    greedy = greedy_decode(model, ids, lengths, **kwargs)
    beam = beam_search(model, ids, lengths, beam_size=1, length_penalty=0.0, **kwargs)
    assert torch.equal(beam.tokens, greedy.tokens)
    assert torch.equal(beam.lengths, greedy.lengths)
    assert torch.equal(beam.finished, greedy.finished)
    assert torch.equal(beam.log_probs, greedy.log_probs)
    assert torch.equal(beam.scores, greedy.scores)
    assert greedy.finished.any() and not greedy.finished.all()  # both kinds of ending are covered


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_with_length_penalty_never_scores_below_greedy(seed):
    # With alpha > 0 the objectives differ: after greedy's eos the single beam may go on with the
    # runner-up, so only "at least as good as greedy under the length-normalised score" holds.
    model = random_model(seed)
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=7, eos_id=EOS, invalid_ids=INVALID)
    greedy = greedy_decode(model, ids, lengths, **kwargs)
    greedy_score = length_normalised_score(greedy.log_probs, greedy.lengths + greedy.finished.long(), 1.0)
    beam = beam_search(model, ids, lengths, beam_size=1, length_penalty=1.0, **kwargs)
    assert (beam.scores >= greedy_score - 1e-6).all()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_wider_beam_never_scores_worse(seed, alpha):
    # Not a theorem for beam search in general, but it holds for these fixed tables (and catches a beam
    # that drops good hypotheses, e.g. by expanding token ids 0..k-1 or losing finished ones).
    model = random_model(seed)
    ids, lengths = batch_prompts(PROMPTS)
    previous = torch.full((len(PROMPTS),), -math.inf)
    for beam in [1, 2, 4, 8]:
        out = beam_search(
            model, ids, lengths, beam_size=beam, max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID,
            length_penalty=alpha,
        )  # fmt: skip
        assert (out.scores[:, 0] >= previous - 1e-6).all(), (beam, out.scores[:, 0], previous)
        previous = out.scores[:, 0]


def early_eos_model() -> TableModel:
    """After the prompt: P(2) = .4, P(eos) = .35, P(3) = .25; after 2 the model is unsure, after 3 it ends.

    Greedy takes 2 (then eos: .4 * .3 = .12); the best hypothesis is the immediate eos (.35), then
    [3, eos] (.25 * .9 = .225).
    """

    def logits(probs: dict[int, float]) -> torch.Tensor:
        p = torch.full((V,), 1e-6)
        for token, value in probs.items():
            p[token] = value
        return p.log()

    table = logits({EOS: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}).repeat(V, V, 1)
    table[:, 4] = logits({2: 0.4, EOS: 0.35, 3: 0.25})  # the prompt ends with 4
    table[:, 2] = logits({EOS: 0.3, 2: 0.26, 3: 0.24, 4: 0.2})
    table[:, 3] = logits({EOS: 0.9, 2: 0.05, 3: 0.03, 4: 0.02})
    return TableModel(table)


def test_early_finished_hypothesis_is_kept_and_returned():
    model = early_eos_model()
    ids, lengths = batch_prompts([[4], [2, 4]])
    out = beam_search(
        model, ids, lengths, beam_size=2, num_return=2, max_new_tokens=5, eos_id=EOS, invalid_ids=INVALID,
        length_penalty=0.0,
    )  # fmt: skip
    for b in range(2):
        assert hypotheses(out, b) == [((), True), ((3,), True)]
    torch.testing.assert_close(out.log_probs[0], torch.tensor([math.log(0.35), math.log(0.225)]))
    assert model.num_steps == 1  # two finished hypotheses after the second token fill the pool: stop
    greedy = greedy_decode(model, ids, lengths, max_new_tokens=5, eos_id=EOS, invalid_ids=INVALID)
    assert hypotheses(greedy, 0) == [((2,), True)]  # greedy misses it


def test_beam_does_not_stop_while_a_longer_hypothesis_can_still_win():
    """alpha = 2: the immediate eos (p = .5) leads after one step, and the live beam [2] (p = .3) scores
    worse at its current length, yet ten near-certain 2s end up better: -1.21 / 6.25 > -0.69 / 1."""
    table = torch.full((V, V, V), -20.0)
    table[:, 4, EOS], table[:, 4, 2], table[:, 4, 3] = math.log(0.5), math.log(0.3), math.log(0.2)
    table[:, 2, 2] = 0.0  # after a 2: another 2, p ~ 1
    model = TableModel(table)
    ids, lengths = batch_prompts([[4]])
    kwargs = dict(max_new_tokens=10, eos_id=EOS, invalid_ids=INVALID, length_penalty=2.0)
    out = beam_search(model, ids, lengths, beam_size=1, **kwargs)
    assert hypotheses(out, 0) == [((2,) * 10, False)]
    eos_only = length_normalised_score(torch.tensor(math.log(0.5)), 1, 2.0)
    assert out.scores[0, 0] > eos_only
    # With alpha = 0 the immediate eos wins, and the search stops after the first token.
    model.num_steps = 0
    out = beam_search(model, ids, lengths, beam_size=1, **{**kwargs, "length_penalty": 0.0})
    assert hypotheses(out, 0) == [((), True)] and model.num_steps == 0


def test_beam_outputs_are_consistent():
    model = random_model(5)
    model.table[..., EOS] -= 1.5  # end less often, so some hypotheses hit max_new_tokens
    ids, lengths = batch_prompts(PROMPTS)
    alpha = 0.8
    out = beam_search(
        model, ids, lengths, beam_size=6, num_return=4, max_new_tokens=5, eos_id=EOS, invalid_ids=INVALID,
        length_penalty=alpha,
    )  # fmt: skip
    assert out.tokens.shape == (len(PROMPTS), 4, 5)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()  # best first
    assert out.finished.any() and not out.finished.all()
    assert (out.lengths[~out.finished] == 5).all()  # unfinished ones ran every step
    expected = length_normalised_score(out.log_probs, out.lengths + out.finished.long(), alpha)
    torch.testing.assert_close(out.scores, expected)
    for b, prompt in enumerate(PROMPTS):
        hyps = hypotheses(out, b)
        assert len(set(hyps)) == len(hyps)  # distinct: the identical first-step beams are expanded once
        for i, (tokens, finished) in enumerate(hyps):
            assert out.log_probs[b, i].item() == pytest.approx(
                model.sequence_log_prob(prompt, list(tokens), finished), abs=1e-5
            )
            assert (out.tokens[b, i, len(tokens) :] == PAD).all()


def test_beam_with_fewer_hypotheses_than_num_return():
    model = random_model(6)
    ids, lengths = batch_prompts(PROMPTS[:2])
    out = beam_search(
        model, ids, lengths, beam_size=8, num_return=8, max_new_tokens=1, eos_id=EOS, invalid_ids=INVALID
    )
    # One step, four allowed ids: [eos] (finished) and [2], [3], [4] (unfinished); four empty slots.
    for b in range(2):
        assert sorted(hypotheses(out, b)[:4]) == [((), True), ((2,), False), ((3,), False), ((4,), False)]
    assert torch.isfinite(out.scores[:, :4]).all() and (out.scores[:, 4:] == -math.inf).all()


def test_every_beam_entry_point_defaults_to_one_length_penalty():
    """beam_search, decode_ids, decode and evaluate share one default alpha (beam_search had 1.0)."""
    from agents.evaluation import evaluate
    from agents.generate import decode, decode_ids

    assert DEFAULT_LENGTH_PENALTY == 0.6
    for function in (beam_search, decode_ids, decode, evaluate):
        default = inspect.signature(function).parameters["length_penalty"].default
        assert default == DEFAULT_LENGTH_PENALTY, function.__name__


def test_beam_search_without_length_penalty_ranks_with_the_default():
    """On this table alpha 0.6 and 1.0 pick different best hypotheses; no argument must mean 0.6."""
    model = random_model(2)
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(beam_size=4, max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID)
    with_06 = beam_search(model, ids, lengths, length_penalty=0.6, **kwargs)
    with_10 = beam_search(model, ids, lengths, length_penalty=1.0, **kwargs)
    rows = range(len(PROMPTS))
    # The case discriminates: two prompts get a shorter best hypothesis with alpha 0.6 than with 1.0.
    assert [hypotheses(with_06, b) == hypotheses(with_10, b) for b in rows].count(False) == 2
    default = beam_search(model, ids, lengths, **kwargs)
    assert [hypotheses(default, b) for b in rows] == [hypotheses(with_06, b) for b in rows]
    torch.testing.assert_close(default.scores, with_06.scores, rtol=0, atol=0)


# --------------------------------------------------------------------------------------- batching


def test_batch_equals_each_prompt_alone():
    model = random_model(7)
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID)
    batched = {
        "greedy": greedy_decode(model, ids, lengths, **kwargs),
        "beam": beam_search(model, ids, lengths, beam_size=3, num_return=2, length_penalty=0.7, **kwargs),
    }
    for b, prompt in enumerate(PROMPTS):
        one_ids, one_lengths = batch_prompts([prompt])
        alone = {
            "greedy": greedy_decode(model, one_ids, one_lengths, **kwargs),
            "beam": beam_search(
                model, one_ids, one_lengths, beam_size=3, num_return=2, length_penalty=0.7, **kwargs
            ),
        }
        for name in batched:
            assert torch.equal(batched[name].tokens[b], alone[name].tokens[0]), name
            assert torch.equal(batched[name].lengths[b], alone[name].lengths[0]), name
            assert torch.equal(batched[name].finished[b], alone[name].finished[0]), name
            torch.testing.assert_close(batched[name].log_probs[b], alone[name].log_probs[0])
            torch.testing.assert_close(batched[name].scores[b], alone[name].scores[0])


# --------------------------------------------------------------------------------------- sampling


def first_token_counts(out: DecodeOutput) -> torch.Tensor:
    """[B, V] counts of the first generated id (eos for hypotheses that ended at once)."""
    first = torch.where(out.lengths > 0, out.tokens[..., 0], EOS)
    return torch.nn.functional.one_hot(first, V).sum(dim=1).double()


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    expected = counts.sum(-1, keepdim=True) * probs
    allowed = probs > 0
    return (((counts - expected) ** 2 / expected.clamp(min=1e-12)) * allowed).sum(-1)


def first_step_probs(model: TableModel, prompts: list[list[int]], temperature: float = 1.0) -> torch.Tensor:
    rows = []
    for prompt in prompts:
        logits = model.table[model.context(prompt)].clone().double()
        logits[list(INVALID)] = -math.inf
        rows.append(torch.softmax(logits / temperature, dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampled_first_tokens_follow_the_tempered_distribution(temperature):
    model = random_model(8, scale=1.0)
    prompts = PROMPTS[:3]
    ids, lengths = batch_prompts(prompts)
    gen = torch.Generator().manual_seed(123)
    out = sample_decode(
        model, ids, lengths, max_new_tokens=1, eos_id=EOS, invalid_ids=INVALID, temperature=temperature,
        num_samples=20_000, generator=gen,
    )  # fmt: skip
    counts = first_token_counts(out)
    assert (counts[:, PAD] == 0).all()
    # 3 degrees of freedom: P(chi2 > 25) ~ 1.6e-5. The untempered distribution must be rejected when the
    # temperature is not 1 (so the test can fail).
    assert (chi_square(counts, first_step_probs(model, prompts, temperature)) < 25).all()
    if temperature != 1.0:
        assert (chi_square(counts, first_step_probs(model, prompts)) > 100).any()
    # Reported log-probs are the untempered model's.
    first = torch.where(out.lengths > 0, out.tokens[..., 0], EOS)
    model_log_probs = first_step_probs(model, prompts).log().float()
    torch.testing.assert_close(out.log_probs, model_log_probs.gather(1, first))
    assert torch.equal(out.scores, out.log_probs)


def test_temperature_moves_mass_in_the_right_direction():
    model = random_model(9, scale=1.0)
    ids, lengths = batch_prompts(PROMPTS[:3])
    frequencies = {}
    for temperature in [0.5, 1.0, 2.0]:
        gen = torch.Generator().manual_seed(0)
        out = sample_decode(
            model, ids, lengths, max_new_tokens=1, eos_id=EOS, invalid_ids=INVALID, temperature=temperature,
            num_samples=5_000, generator=gen,
        )  # fmt: skip
        frequencies[temperature] = first_token_counts(out) / 5_000
    mode = first_step_probs(model, PROMPTS[:3]).argmax(-1, keepdim=True)
    top = {t: f.gather(1, mode).squeeze(1) for t, f in frequencies.items()}
    assert (top[0.5] > top[1.0]).all() and (top[1.0] > top[2.0]).all()  # colder: sharper


@pytest.mark.parametrize("truncation", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 1, "top_p": 0.5}])
def test_sampling_with_a_single_candidate_is_greedy(truncation):
    model = random_model(10)
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID)
    greedy = greedy_decode(model, ids, lengths, **kwargs)
    gen = torch.Generator().manual_seed(0)
    out = sample_decode(
        model, ids, lengths, num_samples=4, temperature=1.7, generator=gen, **truncation, **kwargs
    )
    assert out.tokens.shape == (len(PROMPTS), 4, 6)
    assert torch.equal(out.tokens, greedy.tokens.expand(-1, 4, -1))
    assert torch.equal(out.lengths, greedy.lengths.expand(-1, 4))
    assert torch.equal(out.finished, greedy.finished.expand(-1, 4))
    torch.testing.assert_close(out.log_probs, greedy.log_probs.expand(-1, 4))


def test_top_k_and_top_p_restrict_the_support():
    model = early_eos_model()  # after prompt [4]: P(2) = .4, P(eos) = .35, P(3) = .25, P(4) ~ 0
    ids, lengths = batch_prompts([[4]])
    kwargs = dict(max_new_tokens=1, eos_id=EOS, invalid_ids=INVALID, num_samples=2_000)
    top_k = first_token_counts(
        sample_decode(model, ids, lengths, top_k=2, generator=torch.Generator().manual_seed(0), **kwargs)
    )[0]
    assert top_k[2] > 0 and top_k[EOS] > 0 and top_k[3] == 0 and top_k[4] == 0
    # Mass above eos is .4 < .5: kept; mass above 3 is .75 >= .5: dropped.
    top_p = first_token_counts(
        sample_decode(model, ids, lengths, top_p=0.5, generator=torch.Generator().manual_seed(0), **kwargs)
    )[0]
    assert top_p[2] > 0 and top_p[EOS] > 0 and top_p[3] == 0 and top_p[4] == 0
    # Renormalised over {2, eos}: .4 / .75.
    assert top_p[2].item() / 2_000 == pytest.approx(0.4 / 0.75, abs=0.04)
    top_p_high = first_token_counts(
        sample_decode(model, ids, lengths, top_p=0.8, generator=torch.Generator().manual_seed(0), **kwargs)
    )[0]
    assert top_p_high[3] > 0


def test_generator_makes_sampling_reproducible():
    model = random_model(11, scale=0.5)
    ids, lengths = batch_prompts(PROMPTS)
    kwargs = dict(max_new_tokens=6, eos_id=EOS, invalid_ids=INVALID, num_samples=8)
    first = sample_decode(model, ids, lengths, generator=torch.Generator().manual_seed(42), **kwargs)
    again = sample_decode(model, ids, lengths, generator=torch.Generator().manual_seed(42), **kwargs)
    other = sample_decode(model, ids, lengths, generator=torch.Generator().manual_seed(43), **kwargs)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.log_probs, again.log_probs)
    assert not torch.equal(first.tokens, other.tokens)
    for b, prompt in enumerate(PROMPTS):  # sampled sequences are scored by the model's own log-probs
        for i, (tokens, finished) in enumerate(hypotheses(first, b)):
            assert first.log_probs[b, i].item() == pytest.approx(
                model.sequence_log_prob(prompt, list(tokens), finished), abs=1e-5
            )


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("decoder", "kwargs", "match"),
    [
        ("beam", {"beam_size": 0}, r"beam_size must be >= 1, got 0"),
        ("beam", {"beam_size": 2, "num_return": 3}, r"num_return must be in \[1, beam_size=2\], got 3"),
        ("beam", {"beam_size": 2, "num_return": 0}, r"num_return must be in \[1, beam_size=2\], got 0"),
        ("beam", {"beam_size": 2, "max_new_tokens": 0}, r"max_new_tokens must be >= 1, got 0"),
        ("greedy", {"max_new_tokens": 0}, r"max_new_tokens must be >= 1, got 0"),
        ("sample", {"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ("sample", {"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ("sample", {"top_k": 0}, r"top_k must be >= 1"),
        (
            "sample",
            {"temperature": 0.0},
            r"temperature must be > 0, got 0.0 \(for temperature 0 use greedy_decode\)",
        ),
        ("sample", {"temperature": -1.0}, r"temperature must be > 0"),
        ("sample", {"num_samples": 0}, r"num_samples must be >= 1, got 0"),
        ("sample", {"max_new_tokens": 0}, r"max_new_tokens must be >= 1"),
        ("greedy", {"invalid_ids": (7,)}, r"invalid_ids must lie in \[0, 5\)"),
        ("greedy", {"invalid_ids": (0, 1, 2, 3, 4)}, r"invalid_ids must leave at least one"),
        ("greedy", {"eos_id": 9}, r"eos_id must lie in \[0, 5\)"),
    ],
)
def test_bad_arguments_raise(decoder, kwargs, match):
    model = random_model(0)
    ids, lengths = batch_prompts(PROMPTS[:2])
    kwargs = {"max_new_tokens": 3, "eos_id": EOS, **kwargs}
    function = {"greedy": greedy_decode, "sample": sample_decode, "beam": beam_search}[decoder]
    with pytest.raises(ValueError, match=match):
        function(model, ids, lengths, **kwargs)


def test_bad_prompt_shapes_raise():
    model = random_model(0)
    with pytest.raises(ValueError, match=r"prompt_ids must be \[batch, prompt_len\]"):
        greedy_decode(model, torch.tensor([2, 3]), torch.tensor([2]), max_new_tokens=2, eos_id=EOS)
    with pytest.raises(ValueError, match=r"prompt_lengths must be \[batch\] = \[2\]"):
        greedy_decode(model, torch.tensor([[2], [3]]), torch.tensor([1]), max_new_tokens=2, eos_id=EOS)
