"""MLE pretraining, the user-facing decode() and evaluate()."""

import gymnasium as gym
import numpy as np
import pytest
import sacrebleu
import torch

import lmrl_gym  # noqa: F401
from agents import TransformerPolicy, decode, evaluate, format_evaluation, pretrain
from agents.evaluation import distinct_n
from lmrl_gym.rewards import sentence_bleu

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}


@pytest.fixture
def copy_env():
    return gym.make("TextGen-Copy-v0", **SMALL_COPY)


def test_pretrain_lowers_the_loss_and_returns_a_history(copy_env):
    torch.manual_seed(0)
    policy = TransformerPolicy.for_env(copy_env, n_layer=1, n_embd=32, device="cpu")
    history = pretrain(policy, copy_env, epochs=3, batch_size=16, learning_rate=3e-3)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    assert set(history[0]) == {"epoch", "train_loss", "validation_loss", "learning_rate", "seconds"}


def test_early_stopping_restores_the_best_weights(copy_env):
    torch.manual_seed(0)
    policy = TransformerPolicy.for_env(copy_env, n_layer=1, n_embd=32, device="cpu")
    # A learning rate this high makes the validation loss rise after the first epochs.
    history = pretrain(policy, copy_env, epochs=12, batch_size=8, learning_rate=0.3, patience=1)
    assert len(history) < 12
    best = min(h["validation_loss"] for h in history)
    from agents.pretrain import reference_pairs, validation_loss
    from lmrl_gym.env_setup import encode_split

    setup = copy_env.unwrapped.setup
    tok = policy.tokenizer
    val = reference_pairs(
        encode_split(setup.task, "validation", setup.max_prompt_tokens),
        setup.max_new_tokens,
        tok.eos_id,
        tok.pad_id,
    )
    assert validation_loss(policy, val, 64) == pytest.approx(best, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
    ],
)
def test_pretrain_bad_arguments(copy_env, kwargs, message):
    policy = TransformerPolicy.for_env(copy_env, n_layer=1, n_embd=32, device="cpu")
    with pytest.raises(ValueError, match=message):
        pretrain(policy, copy_env, **kwargs)


def test_pretrain_rejects_a_policy_for_another_env(copy_env):
    policy = TransformerPolicy.for_env("TextGen-v0", n_layer=1, n_embd=32, device="cpu")
    with pytest.raises(ValueError, match="does not match the env"):
        pretrain(policy, copy_env)


def test_decode_returns_texts_and_n_best_lists(copy_env):
    policy = TransformerPolicy.for_env(copy_env, n_layer=1, n_embd=32, device="cpu")
    text = decode(policy, "a b c")
    assert isinstance(text, str)
    texts = decode(policy, ["a b c", "d e f"], method="sample", seed=0)
    assert len(texts) == 2 and texts == decode(policy, ["a b c", "d e f"], method="sample", seed=0)
    n_best = decode(policy, "a b c", method="beam", beam_size=4, num_return=3)
    assert len(n_best) == 3 and all(isinstance(t, str) and isinstance(s, float) for t, s in n_best)
    assert [s for _, s in n_best] == sorted((s for _, s in n_best), reverse=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "beam", "beam_size": 0}, "beam_size"),
        ({"method": "sample", "top_p": 1.5}, "top_p"),
        ({"method": "sample", "top_p": 0.0}, "top_p"),
        ({"method": "sample", "temperature": -1.0}, "temperature"),
        ({"method": "nucleus"}, "unknown decoding method 'nucleus'"),
    ],
)
def test_decode_bad_arguments(copy_env, kwargs, message):
    policy = TransformerPolicy.for_env(copy_env, n_layer=1, n_embd=32, device="cpu")
    with pytest.raises(ValueError, match=message):
        decode(policy, "a b c", **kwargs)


def test_distinct_n_counts_unique_ngrams_over_all_outputs():
    tokens = torch.tensor([[4, 5, 4, 0], [4, 5, 6, 7]])
    lengths = torch.tensor([3, 4])
    assert distinct_n(tokens, lengths, 1, 10) == pytest.approx(4 / 7)  # {4, 5, 6, 7} of 7 unigrams
    assert distinct_n(tokens, lengths, 2, 10) == pytest.approx(4 / 5)  # {45, 54, 56, 67} of 5 bigrams


def test_evaluate_reports_every_metric_and_the_env_reward(copy_env):
    torch.manual_seed(0)
    policy = TransformerPolicy.for_env(copy_env, n_layer=1, n_embd=32, device="cpu")
    results = evaluate(policy, copy_env, split="validation", batch_size=7)
    assert results["count"] == len(copy_env.unwrapped.task.examples("validation"))
    for key in ("bleu", "mean_sentence_bleu", "chrf", "exact_match", "mean_reward", "lm_score", "distinct_1"):
        assert np.isfinite(results[key])
    assert np.isfinite(results["distinct_2"]) and np.isfinite(results["mean_length"])
    assert 0 <= results["bleu"] <= 100 and 0 <= results["exact_match"] <= 1
    # The env's reward is sentence BLEU / 100 of each (unfinished or eos-ended) output: recompute it.
    setup = copy_env.unwrapped.setup
    from agents.generate import decode_ids
    from lmrl_gym.env_setup import EnvSetup

    data = EnvSetup(split="validation", **setup.kwargs).data
    out = decode_ids(policy, torch.as_tensor(data.prompts, dtype=torch.long))
    expected, texts = [], []
    for i in range(len(data)):
        hyp = out.tokens[i, 0, : out.lengths[i, 0]].tolist()
        texts.append(" ".join(policy.tokenizer.id_to_token[t] for t in hyp))
        refs = [
            data.references[i, j, : data.reference_lengths[i, j]].tolist()
            for j in range(data.references.shape[1])
            if data.reference_mask[i, j]
        ]
        expected.append(sentence_bleu(hyp, refs) / 100)
    assert results["mean_reward"] == pytest.approx(np.mean(expected), abs=1e-9)
    # Mean sentence BLEU is that reward on the 0-100 scale; chrF is sacreBLEU's on the decoded texts.
    assert results["mean_sentence_bleu"] == pytest.approx(100 * np.mean(expected), abs=1e-9)
    streams = [[ex.references[0] for ex in data.examples]]  # one reference per copy example
    assert all(len(ex.references) == 1 for ex in data.examples)
    assert results["chrf"] == pytest.approx(sacrebleu.corpus_chrf(texts, streams).score, abs=1e-9)
    table = format_evaluation(results)
    assert "| bleu |" in table and "BLEU(tokens=ids" in table
    assert "| chrf |" in table and "| mean_sentence_bleu |" in table and "nc:6|nw:0" in table


@pytest.mark.slow
def test_pretraining_solves_reverse_to_095_exact_match():
    torch.manual_seed(0)
    env = gym.make("TextGen-Reverse-v0")  # 10 symbols, lengths 2-8
    policy = TransformerPolicy.for_env(env, arch="causal", n_layer=2, n_head=4, n_embd=128, device="cpu")
    pretrain(policy, env, epochs=8, batch_size=64, learning_rate=2e-3)
    results = evaluate(policy, env, split="test", method="greedy")
    assert results["exact_match"] >= 0.95, results  # measured 1.0 (500 test examples)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_pretraining_on_numbers_reaches_a_high_test_bleu(arch):
    torch.manual_seed(0)
    env = gym.make("TextGen-v0")
    policy = TransformerPolicy.for_env(env, arch=arch, n_layer=2, n_head=4, n_embd=128, device="cpu")
    pretrain(policy, env, epochs=3, batch_size=64, learning_rate=2e-3)
    results = evaluate(policy, env, split="test", method="greedy")
    assert results["bleu"] >= 90, results
