"""Rewards from ``transformers`` models: ClassifierReward and CausalLMScoreReward on a causal LM.

Every model is a tiny one built locally (``tests/hf_assets.py``) and loaded by path, as a hub name would be.
"""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmrl_gym
from lmrl_gym.rewards import CausalLMScoreReward, ClassifierReward, RewardBatch, RewardContext

pytestmark = pytest.mark.usefixtures("one_thread")

COPY_SMALL = {"num_symbols": 6, "min_length": 3, "max_length": 3}
# Mixed lengths (one empty, one long) so that a batch needs padding.
TEXTS = [
    "jump twice",
    "walk left after run right thrice and look opposite left",
    "",
    "the cat",
    "look around right twice and jump left thrice after walk",
    "run",
]


@pytest.fixture(scope="module")
def classifier(hf_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(hf_classifier_dir).eval(),
        AutoTokenizer.from_pretrained(hf_classifier_dir),
    )


def logits_by_hand(model, tokenizer, text):
    """One text, no padding: the classifier's logits [num_labels] as its own tokenizer feeds it."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0].double()


def play(env, text, index=0):
    """Reset to example ``index``, emit ``text``'s tokens and eos; return (rewards, last info)."""
    env.reset(seed=0, options={"index": index})
    tokenizer = env.unwrapped.tokenizer
    rewards, info = [], {}
    for token in [*tokenizer.encode(text), tokenizer.eos_id]:
        _, reward, terminated, truncated, info = env.step(token)
        rewards.append(reward)
        if terminated or truncated:
            break
    return rewards, info


# ---------------------------------------------------------------------------------------- ClassifierReward


def test_probability_is_the_pipelines_and_the_by_hand_softmax(hf_classifier_dir, classifier):
    from transformers import pipeline

    model, tokenizer = classifier
    reward = ClassifierReward(hf_classifier_dir, label="POSITIVE")
    scores = reward.score(TEXTS)
    assert scores.dtype == torch.float64 and scores.shape == (len(TEXTS),)
    by_hand = [torch.softmax(logits_by_hand(model, tokenizer, t), dim=-1)[1].item() for t in TEXTS]
    np.testing.assert_allclose(scores.numpy(), by_hand, rtol=0, atol=1e-6)
    classify = pipeline("text-classification", model=hf_classifier_dir, top_k=None)
    from_pipeline = [{r["label"]: r["score"] for r in classify(t)[0]}["POSITIVE"] for t in TEXTS]
    np.testing.assert_allclose(scores.numpy(), from_pipeline, rtol=0, atol=1e-6)
    assert len(set(np.round(by_hand, 6))) == len(TEXTS)  # the texts really score differently


def test_padding_and_batch_size_do_not_change_scores(hf_classifier_dir):
    reward = ClassifierReward(hf_classifier_dir, label="POSITIVE", batch_size=4)
    batched = reward.score(TEXTS)
    one_by_one = torch.cat([reward.score([t]) for t in TEXTS])
    np.testing.assert_allclose(batched.numpy(), one_by_one.numpy(), rtol=0, atol=1e-6)
    # Reversed order: results follow their texts, whatever the sorting by length inside.
    np.testing.assert_allclose(reward.score(TEXTS[::-1]).numpy(), batched.numpy()[::-1], rtol=0, atol=1e-6)


def test_logit_output_and_label_by_index(hf_classifier_dir, classifier):
    model, tokenizer = classifier
    by_hand = torch.stack([logits_by_hand(model, tokenizer, t) for t in TEXTS])
    negative = ClassifierReward(hf_classifier_dir, label=0, output="logit")
    assert negative.label == "NEGATIVE"
    np.testing.assert_allclose(negative.score(TEXTS).numpy(), by_hand[:, 0].numpy(), rtol=0, atol=1e-6)
    positive = ClassifierReward(model, label="POSITIVE", tokenizer=tokenizer, output="logit", batch_size=2)
    np.testing.assert_allclose(positive.score(TEXTS).numpy(), by_hand[:, 1].numpy(), rtol=0, atol=1e-6)
    by_name = ClassifierReward(model, label="NEGATIVE")  # an object's tokenizer comes from its name_or_path
    by_index = ClassifierReward(model, label=0)
    np.testing.assert_allclose(by_name.score(TEXTS).numpy(), by_index.score(TEXTS).numpy(), rtol=0, atol=0)


def test_config_without_pad_scores_one_text_at_a_time(hf_classifier_dir, classifier):
    """GPT-2 classifiers on the hub often name no pad token; transformers then refuses batches of 2+ rows."""
    from transformers import AutoModelForSequenceClassification

    _, tokenizer = classifier
    no_pad = AutoModelForSequenceClassification.from_pretrained(hf_classifier_dir, pad_token_id=None)
    assert no_pad.config.pad_token_id is None
    with pytest.warns(UserWarning, match="config names no pad token .* scores one text per forward pass"):
        reward = ClassifierReward(no_pad, label="POSITIVE", tokenizer=tokenizer, batch_size=3)
    assert reward.rows_per_forward == 1
    texts = [*TEXTS, "jump left", "walk twice"]
    expected = ClassifierReward(hf_classifier_dir, label="POSITIVE").score(texts)
    np.testing.assert_allclose(reward.score(texts).numpy(), expected.numpy(), rtol=0, atol=1e-6)


def test_single_logit_classifier_gets_a_sigmoid(classifier):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    _, tokenizer = classifier
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, id2label={0: "TOXIC"}, label2id={"TOXIC": 0},
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config).eval()
    reward = ClassifierReward(model, label="TOXIC", tokenizer=tokenizer)
    logits = torch.stack([logits_by_hand(model, tokenizer, t)[0] for t in TEXTS])
    np.testing.assert_allclose(reward.score(TEXTS).numpy(), torch.sigmoid(logits).numpy(), rtol=0, atol=1e-6)
    model.config.problem_type = "regression"
    with pytest.raises(ValueError, match="problem_type is 'regression'; use output='logit'"):
        ClassifierReward(model, label="TOXIC", tokenizer=tokenizer)
    raw = ClassifierReward(model, label="TOXIC", tokenizer=tokenizer, output="logit")
    np.testing.assert_allclose(raw.score(TEXTS).numpy(), logits.numpy(), rtol=0, atol=1e-6)


def test_long_texts_are_cut_with_a_warning(hf_classifier_dir, classifier):
    model, tokenizer = classifier
    reward = ClassifierReward(hf_classifier_dir, label="POSITIVE", max_length=4)
    long_text, short_text = TEXTS[1], "run"
    assert len(tokenizer(short_text)["input_ids"]) <= 4 < len(tokenizer(long_text)["input_ids"])
    with pytest.warns(UserWarning, match="longer than the classifier's 4 tokens"):
        scores = reward.score([long_text, short_text])
    first4 = tokenizer(long_text, truncation=True, max_length=4, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.softmax(model(input_ids=first4).logits[0].double(), dim=-1)[1].item()
    assert scores[0].item() == pytest.approx(expected, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward.score([short_text])  # nothing cut, nothing said


def test_bad_label_lists_the_labels(hf_classifier_dir, classifier):
    model, tokenizer = classifier
    with pytest.raises(ValueError, match=r"label 'positive' is not one of the classifier's labels \{0: 'NEGATIVE', 1: 'POSITIVE'\}"):  # fmt: skip
        ClassifierReward(model, label="positive", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="label index 2 is out of range for a classifier with 2 labels"):
        ClassifierReward(model, label=2, tokenizer=tokenizer)
    with pytest.raises(TypeError, match="label must be a label name or an index"):
        ClassifierReward(model, label=True, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"output must be one of \['probability', 'logit'\], got 'prob'"):
        ClassifierReward(model, label=1, tokenizer=tokenizer, output="prob")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        ClassifierReward(model, label=1, tokenizer=tokenizer, batch_size=0)


def test_wrong_kind_of_model_is_a_clear_error(hf_gpt2_dir, hf_classifier_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    # A causal LM's folder would load as a classifier with a random head; it must not.
    with pytest.raises(ValueError, match="holds a GPT2LMHeadModel, not a sequence classifier"):
        ClassifierReward(hf_gpt2_dir, label="POSITIVE")
    with pytest.raises(ValueError, match="cannot load a sequence classifier .* not a checkpoint folder"):
        ClassifierReward(tmp_path, label="POSITIVE")
    with pytest.raises(TypeError, match="model_or_path must be a hub name, a local folder or a transformers"):
        ClassifierReward(lambda ids: ids, label="POSITIVE")
    # An object is checked by what it returns: a causal LM's logits are [batch, time, vocab].
    lm = AutoModelForCausalLM.from_pretrained(hf_gpt2_dir)
    lm.config.id2label, lm.config.pad_token_id = {0: "NEGATIVE", 1: "POSITIVE"}, 0
    reward = ClassifierReward(lm, label="POSITIVE", tokenizer=hf_classifier_dir)
    with pytest.raises(ValueError, match=r"returned logits of shape \(2, \d+, \d+\); a sequence classifier"):
        reward.score(["jump", "walk"])
    # The reverse: a classifier is not a causal LM.
    with pytest.raises(
        ValueError, match="holds a GPT2ForSequenceClassification, not a causal language model"
    ):
        CausalLMScoreReward(hf_classifier_dir)


def test_in_an_env_alone_and_in_a_weighted_sum(hf_classifier_dir):
    reward = ClassifierReward(hf_classifier_dir, label="POSITIVE")
    env = gym.make("TextGen-Copy-v0", task_kwargs=COPY_SMALL, reward=reward)
    env.reset(seed=0, options={"index": 0})
    text = env.unwrapped.setup.data.examples[0].references[0]
    rewards, info = play(env, text)
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)  # a sequence reward, paid at the end
    assert rewards[-1] == pytest.approx(reward.score([text])[0].item(), abs=1e-12)
    assert info["reward_components"] == {"classifier": pytest.approx(rewards[-1])}

    prompted = ClassifierReward(hf_classifier_dir, label="POSITIVE", include_prompt=True, name="sentiment")
    env = gym.make("TextGen-Copy-v0", task_kwargs=COPY_SMALL, reward={prompted: 2.0, "bleu": 0.5})
    rewards, info = play(env, text)
    prompt = env.unwrapped.setup.data.examples[0].prompt
    components = info["reward_components"]
    assert components["sentiment"] == pytest.approx(prompted.score([f"{prompt} {text}"])[0].item(), abs=1e-12)
    assert components["bleu"] == pytest.approx(1.0)
    assert rewards[-1] == pytest.approx(2.0 * components["sentiment"] + 0.5, abs=1e-12)


def test_bind_moves_the_model_to_the_envs_device(hf_classifier_dir):
    reward = ClassifierReward(hf_classifier_dir, label="POSITIVE")
    task = lmrl_gym.make_task("copy", **COPY_SMALL)
    bound = reward.bind(RewardContext(task, task.tokenizer, torch.device("cpu")))
    assert bound is not reward and bound.model is reward.model  # shared, not copied
    assert bound.device == torch.device("cpu") and next(bound.model.parameters()).device.type == "cpu"
    assert not bound.model.training


def test_importing_lmrl_gym_does_not_import_transformers():
    code = (
        "import sys, lmrl_gym; from lmrl_gym.rewards import ClassifierReward, CausalLMScoreReward; "
        "CausalLMScoreReward(lambda ids: ids); print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------- CausalLMScoreReward on a real LM


@pytest.fixture(scope="module")
def gpt2(hf_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(hf_gpt2_dir).eval(), AutoTokenizer.from_pretrained(
        hf_gpt2_dir
    )


def text_logprob_by_hand(model, tokenizer, text, with_eos):
    """log p(text [, eos]) after <|endoftext|>, token by token, one text, no padding."""
    eos = tokenizer.eos_token_id
    ids = [eos, *tokenizer(text, add_special_tokens=False)["input_ids"], *([eos] if with_eos else [])]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]


def test_lm_on_another_tokenizer_scores_the_re_encoded_text(hf_gpt2_dir, gpt2):
    model, tokenizer = gpt2
    reward = CausalLMScoreReward(hf_gpt2_dir)
    assert reward.per_token  # until bound: which way depends on the environment's tokenizer
    env = gym.make("TextGen-Copy-v0", task_kwargs=COPY_SMALL, reward=reward)
    assert env.unwrapped.setup.reward.per_token is False  # a word tokenizer: the text is re-encoded
    env.reset(seed=0, options={"index": 0})
    text = env.unwrapped.setup.data.examples[0].references[0]
    rewards, info = play(env, text)
    expected = sum(text_logprob_by_hand(model, tokenizer, text, with_eos=True))
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == pytest.approx(expected, abs=1e-6)
    assert info["reward_components"]["lm"] == pytest.approx(expected, abs=1e-6)
    # Batched (padded, chunked) equals one by one; no eos means the end is not scored.
    bound = env.unwrapped.setup.reward
    bound.batch_size = 2
    ended = [True, False, True, True, False, True]
    scores = bound.score_texts(TEXTS, ended)
    by_hand = [sum(text_logprob_by_hand(model, tokenizer, t, e)) for t, e in zip(TEXTS, ended, strict=True)]
    np.testing.assert_allclose(scores.numpy(), by_hand, rtol=0, atol=1e-6)
    assert scores[2].item() == pytest.approx(by_hand[2]) and by_hand[2] < 0  # empty text: log p(eos)


class WrappedTokenizer:
    """The least of lmrl_gym's tokenizer protocol around a transformers tokenizer, as an env would hold it."""

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.pad_id = len(tokenizer)  # the env's own pad, outside the model's vocabulary (GPT-2 has none)
        self.vocab_size = len(tokenizer)

    def decode(self, ids):
        return self.inner.decode(list(ids), skip_special_tokens=True)


def reward_batch(tokenizer, rows, lengths, ended):
    """A RewardBatch of generated id rows (padded with the env's pad) for a bound token reward."""
    width = max(len(r) for r in rows)
    generated = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        generated[i, : len(row)] = torch.tensor(row)
    zeros = torch.zeros(len(rows), 1, 1, dtype=torch.long)
    return RewardBatch(
        generated=generated, lengths=torch.tensor(lengths), ended_with_eos=torch.tensor(ended),
        references=zeros, reference_lengths=zeros[..., 0], reference_mask=torch.ones(len(rows), 1, dtype=torch.bool),
        prompts=zeros[..., 0], prompt_lengths=torch.zeros(len(rows), dtype=torch.long),
        example_index=torch.zeros(len(rows), dtype=torch.long), examples=[], tokenizer=tokenizer,
    )  # fmt: skip


def test_lm_on_its_own_tokenizer_scores_each_token_of_the_envs_ids(hf_gpt2_dir, gpt2):
    model, hf_tokenizer = gpt2
    tokenizer = WrappedTokenizer(hf_tokenizer)
    task = lmrl_gym.make_task("copy", **COPY_SMALL)
    reward = CausalLMScoreReward(model, batch_size=2).bind(
        RewardContext(task, tokenizer, torch.device("cpu"))
    )
    assert reward.per_token and reward.mode == "ids"
    texts = ["jump twice", "walk left after run right", "run"]
    rows = [hf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # Play the three episodes token by token together, then eos; rows that are done repeat their last step.
    per_step = []
    for step in range(max(len(r) for r in rows) + 1):
        lengths = [min(step + 1, len(r)) for r in rows]
        ended = [step >= len(r) for r in rows]
        per_step.append(
            reward(
                reward_batch(tokenizer, [r[:n] for r, n in zip(rows, lengths, strict=True)], lengths, ended)
            )
        )
    for i, text in enumerate(texts):
        expected = text_logprob_by_hand(model, hf_tokenizer, text, with_eos=True)
        got = [per_step[s][i].item() for s in range(len(rows[i]) + 1)]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        # Per token or re-encoded, the episode's total is the same number.
        whole = CausalLMScoreReward(model).bind(RewardContext(task, task.tokenizer, torch.device("cpu")))
        assert sum(got) == pytest.approx(whole.score_texts([text], [True])[0].item(), abs=1e-6)
    # An episode that has taken no token yet scores 0.
    empty = reward(reward_batch(tokenizer, [[rows[0][0]], []], [1, 0], [False, False]))
    assert empty[1].item() == 0.0


def test_lm_errors_name_what_was_wrong(hf_gpt2_dir, gpt2, tmp_path):
    model, hf_tokenizer = gpt2
    with pytest.raises(ValueError, match="cannot load a causal language model .* not a checkpoint folder"):
        CausalLMScoreReward(tmp_path)
    with pytest.raises(TypeError, match="model must be callable"):
        CausalLMScoreReward(3)
    with pytest.raises(ValueError, match="tokenizer= is for a transformers model"):
        CausalLMScoreReward(lambda ids: ids, tokenizer=hf_tokenizer)
    task = lmrl_gym.make_task("copy", **COPY_SMALL)
    bound = CausalLMScoreReward(model, tokenizer=hf_tokenizer).bind(RewardContext(task, task.tokenizer))
    with pytest.raises(
        ValueError, match="longer than the language model's 128 positions; lower max_new_tokens"
    ):
        bound.score_texts(["jump " * 200], [True])


def test_on_an_env_with_the_lms_own_tokenizer(hf_gpt2_dir, hf_classifier_dir, gpt2):
    """End to end on gym.make(..., tokenizer=path): the LM reads the env's ids, the classifier re-encodes."""
    from lmrl_gym.env import ENV_ARGUMENTS

    if "tokenizer" not in ENV_ARGUMENTS:
        pytest.skip("the environments' tokenizer= argument (issue 11, item 1) has not landed yet")
    model, hf_tokenizer = gpt2
    classifier = ClassifierReward(hf_classifier_dir, label="POSITIVE")
    reward = {CausalLMScoreReward(hf_gpt2_dir): 1.0, classifier: 1.0}
    env = gym.make("TextGen-Copy-v0", task_kwargs=COPY_SMALL, tokenizer=hf_gpt2_dir, reward=reward)
    lm = env.unwrapped.setup.reward.components[0][0]
    assert lm.per_token and lm.mode == "ids"
    text = env.unwrapped.setup.data.examples[0].references[0]
    rewards, info = play(env, text)
    expected = text_logprob_by_hand(model, hf_tokenizer, text, with_eos=True)
    np.testing.assert_allclose(rewards[:-1], expected[:-1], rtol=0, atol=1e-6)
    assert info["reward_components"]["lm"] == pytest.approx(sum(expected), abs=1e-6)
    assert info["reward_components"]["classifier"] == pytest.approx(
        classifier.score([text])[0].item(), abs=1e-12
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_cuda_env_the_models_move_and_scores_match_cpu(hf_classifier_dir, hf_gpt2_dir):
    task = lmrl_gym.make_task("copy", **COPY_SMALL)
    cpu_classifier = ClassifierReward(hf_classifier_dir, label="POSITIVE")
    cuda_classifier = ClassifierReward(hf_classifier_dir, label="POSITIVE").bind(
        RewardContext(task, task.tokenizer, torch.device("cuda"))
    )
    assert next(cuda_classifier.model.parameters()).is_cuda
    np.testing.assert_allclose(
        cuda_classifier.score(TEXTS).numpy(), cpu_classifier.score(TEXTS).numpy(), atol=1e-5
    )
    cpu_lm = CausalLMScoreReward(hf_gpt2_dir).bind(RewardContext(task, task.tokenizer))
    cuda_lm = CausalLMScoreReward(hf_gpt2_dir).bind(RewardContext(task, task.tokenizer, torch.device("cuda")))
    ended = [True] * len(TEXTS)
    np.testing.assert_allclose(
        cuda_lm.score_texts(TEXTS, ended).numpy(), cpu_lm.score_texts(TEXTS, ended).numpy(), atol=1e-4
    )
