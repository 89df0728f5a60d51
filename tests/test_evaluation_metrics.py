"""The evaluator's overlap scores on short outputs: corpus BLEU, mean sentence BLEU and chrF.

The outputs are scripted (``decode_ids`` is replaced by a lookup from prompt to output text), so each
test knows exactly what was "generated" and can score it independently with sacreBLEU on the texts.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import sacrebleu
import torch

import lmrl_gym  # noqa: F401  (registers TextGen-v0)
from agents import TransformerPolicy, evaluate, format_evaluation
from agents import evaluation as evaluation_module
from agents.decoding import DecodeOutput
from agents.evaluation import corpus_chrf

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "john", "margaret", "ken"]
# Test references of one or two words; some examples have two references, some one.
TEST_REFERENCES = {
    f"greet {name}": [f"hello {name}", "hi"] if i % 2 else [f"hey {name}"] for i, name in enumerate(NAMES)
}
GREETINGS = {
    # Every word of the test references occurs here, so the tokenizer (built from train) knows them all.
    "train": [(f"meet {n}", [f"hello {n}", f"hey {n}", "hi"]) for n in NAMES] + [("greet everyone", ["hi"])],
    "validation": [("greet nobody", ["hi"])],
    "test": list(TEST_REFERENCES.items()),
}


@pytest.fixture
def greetings_env():
    # Room for outputs longer than any reference (the default is the longest reference + 1).
    return gym.make("TextGen-v0", task=GREETINGS, max_new_tokens=6)


def script_outputs(monkeypatch, outputs: dict[str, str]) -> None:
    """Make ``evaluate`` "generate" ``outputs[prompt]`` (eos-finished) for every prompt."""

    def scripted_decode_ids(policy, prompt_ids, **kwargs):
        tok = policy.tokenizer
        rows = [tok.encode(outputs[tok.decode(p.tolist())]) for p in prompt_ids]
        tokens = torch.full((len(rows), 1, policy.max_new_tokens), tok.pad_id, dtype=torch.long)
        for b, row in enumerate(rows):
            tokens[b, 0, : len(row)] = torch.tensor(row, dtype=torch.long)
        lengths = torch.tensor([[len(r)] for r in rows])
        zeros = torch.zeros(len(rows), 1)
        return DecodeOutput(tokens, lengths, torch.ones(len(rows), 1, dtype=torch.bool), zeros, zeros)

    monkeypatch.setattr(evaluation_module, "decode_ids", scripted_decode_ids)


def tiny_policy(env) -> TransformerPolicy:
    torch.manual_seed(0)
    return TransformerPolicy.for_env(env, n_layer=1, n_embd=16, device="cpu")


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacreBLEU's layout: the k-th reference of every segment, None where a segment has fewer."""
    width = max(len(r) for r in references)
    return [[r[k] if k < len(r) else None for r in references] for k in range(width)]


def test_exact_one_and_two_word_outputs_score_0_corpus_bleu_but_100_chrf_and_sentence_bleu(
    greetings_env, monkeypatch
):
    script_outputs(monkeypatch, {prompt: refs[-1] for prompt, refs in TEST_REFERENCES.items()})
    results = evaluate(tiny_policy(greetings_env), greetings_env, split="test")
    assert results["count"] == 10 and results["mean_length"] < 2  # "hi", "hey ada", ...
    assert results["exact_match"] == 1.0 and results["mean_reward"] == pytest.approx(1.0)
    # No output has four tokens: corpus BLEU has no 4-gram precision and is 0 ...
    assert results["bleu"] == 0.0
    # ... while the scores a reader can use on short texts say what happened.
    assert results["chrf"] == pytest.approx(100.0, abs=1e-9)
    assert results["mean_sentence_bleu"] == pytest.approx(100.0, abs=1e-9)


def test_scores_equal_sacrebleu_on_the_same_texts(greetings_env, monkeypatch):
    # Exact, partly right, reordered, wrong, longer than the reference, and empty outputs.
    outputs = ["hey ada", "hello", "hey grace", "grace hello", "hi hi", "hello donald hello donald"]
    outputs += ["hey", "hello john hi", "ken", ""]
    script_outputs(monkeypatch, dict(zip(TEST_REFERENCES, outputs, strict=True)))
    results = evaluate(tiny_policy(greetings_env), greetings_env, split="test", batch_size=3)

    references = list(TEST_REFERENCES.values())
    expected_chrf = sacrebleu.corpus_chrf(outputs, reference_streams(references)).score
    assert results["chrf"] == pytest.approx(expected_chrf, abs=1e-9)
    assert 0 < results["chrf"] < 100
    # Every word is in the vocabulary, so whitespace tokens are the token ids one to one.
    pairs = zip(outputs, references, strict=True)
    sentence = [sacrebleu.sentence_bleu(o, r, tokenize="none").score for o, r in pairs]
    assert results["mean_sentence_bleu"] == pytest.approx(np.mean(sentence), abs=1e-9)
    assert len(set(np.round(sentence, 6))) > 3  # a real mix of scores, not all 0 or 100
    # It is the number the env's bleu reward pays, on the 0-100 scale.
    assert results["mean_sentence_bleu"] == pytest.approx(100 * results["mean_reward"], abs=1e-9)
    corpus = sacrebleu.corpus_bleu(outputs, reference_streams(references), tokenize="none").score
    assert results["bleu"] == pytest.approx(corpus, abs=1e-9) and results["bleu"] > 0


def test_format_evaluation_lists_the_new_scores_and_their_signatures(greetings_env, monkeypatch):
    script_outputs(monkeypatch, {prompt: refs[0] for prompt, refs in TEST_REFERENCES.items()})
    results = evaluate(tiny_policy(greetings_env), greetings_env, split="test")
    table = format_evaluation(results)
    cells = [line.split("|") for line in table.splitlines()[2:] if line.startswith("| ")]
    rows = {cell[1].strip(): cell[2].strip() for cell in cells}
    assert rows["bleu"] == "0" and rows["mean_sentence_bleu"] == "100" and rows["chrf"] == "100"
    assert "mean_sentence_bleu: BLEU(tokens=ids, order=4, smooth=exp, effective_order=True)" in table
    expected = f"nrefs:var|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{sacrebleu.__version__}"
    assert results["chrf_signature"] == expected
    assert f"chrf: sacreBLEU chrF2 {results['chrf_signature']}" in table


def test_corpus_chrf_handles_a_variable_number_of_references_and_rejects_bad_input():
    hyps, refs = ["hello ada", "hi"], [["hello ada"], ["hey", "hi"]]
    score, signature = corpus_chrf(hyps, refs)
    assert score == pytest.approx(sacrebleu.corpus_chrf(hyps, [["hello ada", "hey"], [None, "hi"]]).score)
    assert score == pytest.approx(100.0) and "nrefs:var" in signature and "nc:6|nw:0" in signature
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference lists"):
        corpus_chrf(hyps, refs[:1])
    with pytest.raises(ValueError, match="at least one reference"):
        corpus_chrf(hyps, [["hello ada"], []])
