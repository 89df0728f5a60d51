"""HFPolicy in the training and evaluation tools: pretrain, evaluate, decode, TextEvalCallback, IRL, LoRA.

Tiny GPT-2 (``hf_gpt2_dir``, built once per session and loaded by path) on the small copy task in its
BPE ids. The algorithms' own surface (round trip, exact resume, same seed twice) runs over HFPolicy in
``test_algorithms.py``; here: what the other tools do with it, and LoRA's promises (only adapters and the
value head train; the KL reference is the policy as ``learn`` found it, held as adapter weights only).
"""

from __future__ import annotations

import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import lmrl_gym  # noqa: E402, F401
from agents import IRL, decode, evaluate, pretrain  # noqa: E402
from agents.algorithms import PPO  # noqa: E402
from agents.callbacks import TextEvalCallback  # noqa: E402
from agents.evaluation import evaluation_lm  # noqa: E402
from agents.generate import decode_ids  # noqa: E402
from agents.policies.hf import HFPolicy, LoraReference  # noqa: E402
from agents.pretrain import reference_pairs, validation_loss  # noqa: E402
from lmrl_gym.rewards import KneserNeyLM  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # peft's own call of a transformers property renamed in 5.x (not ours to fix).
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}


def copy_env(folder, **kwargs) -> gym.Env:
    return gym.make("TextGen-Copy-v0", tokenizer=str(folder), **SMALL_COPY, **kwargs)


def new_policy(folder, env, **kwargs) -> HFPolicy:
    return HFPolicy.from_pretrained(folder, env=env, device="cpu", **kwargs)


def lora_config():
    # fan_in_fan_out: GPT-2's attention is a Conv1D (weights stored transposed); peft would set it with a warning.
    return peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM", fan_in_fan_out=True
    )


def validation_pairs(env):
    setup = env.unwrapped.setup
    tok = setup.tokenizer
    return reference_pairs(setup.encoded("validation"), setup.max_new_tokens, tok.eos_id, tok.pad_id)


@pytest.fixture(scope="module")
def trained(hf_gpt2_dir):
    """``(policy, env)``: the tiny GPT-2 after a short pretrain that copies the test prompts exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture, which a module-scoped fixture runs before
    try:
        env = copy_env(hf_gpt2_dir)
        torch.manual_seed(0)
        policy = new_policy(hf_gpt2_dir, env)
        pretrain(policy, env, epochs=8, batch_size=16, learning_rate=3e-3)
    finally:
        torch.set_num_threads(threads)
    return policy, env


# ---------------------------------------------------------------------- pretrain, evaluate, decode


def test_pretrain_lowers_the_validation_loss_in_the_env_s_own_token_ids(hf_gpt2_dir):
    env = copy_env(hf_gpt2_dir)
    policy = new_policy(hf_gpt2_dir, env)
    val = validation_pairs(env)
    before = validation_loss(policy, val, 64)
    history = pretrain(policy, env, epochs=1)
    after = history[0]["validation_loss"]
    assert after < before - 0.2, (before, after)
    # The reported loss is the one of the env's BPE ids (it was the word tokenizer's ids of the same task).
    assert validation_loss(policy, val, 64) == pytest.approx(after, rel=1e-5)


def single_env_returns(env_folder, policy, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(returns, episode lengths)`` of the greedy outputs of the first ``count`` test prompts, each played
    token by token in a single ``TextGenEnv`` of the test split."""
    env = copy_env(env_folder, split="test")
    data = env.unwrapped.setup.data
    out = decode_ids(policy, torch.as_tensor(data.prompts[:count], dtype=torch.long), method="greedy")
    returns, lengths = np.zeros(count), np.zeros(count, dtype=int)
    for i in range(count):
        env.reset(options={"index": i})
        n = int(out.lengths[i, 0])
        actions = out.tokens[i, 0, :n].tolist() + ([policy.tokenizer.eos_id] if out.finished[i, 0] else [])
        for action in actions:
            _, reward, terminated, _, _ = env.step(action)
            returns[i] += reward
        assert terminated
        lengths[i] = len(actions)
    return returns, lengths


def test_evaluate_pays_what_the_env_pays_for_outputs_of_different_lengths(hf_gpt2_dir):
    """Rows whose episode is over still step the replay env while others go on: they must not be given the
    decoder's pad, which lies outside a Hugging Face env's action space."""
    env = copy_env(hf_gpt2_dir)
    torch.manual_seed(0)
    policy = new_policy(hf_gpt2_dir, env)
    pretrain(policy, env, epochs=1)  # half-trained: some outputs end early, some run to the limit
    results = evaluate(policy, env, split="test", method="greedy")
    count = len(env.unwrapped.setup.task.examples("test"))
    assert results["count"] == count
    returns, lengths = single_env_returns(hf_gpt2_dir, policy, count)
    assert len(set(lengths.tolist())) > 1, lengths  # the case this test is about
    assert results["mean_reward"] == pytest.approx(returns.mean(), abs=1e-9)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_evaluate_a_trained_hf_policy(trained, method):
    policy, env = trained
    examples = env.unwrapped.setup.task.examples("test")
    results = evaluate(policy, env, split="test", method=method)
    assert results["count"] == len(examples)
    assert results["exact_match"] == 1.0 and results["mean_reward"] == pytest.approx(1.0)
    reference_lengths = [len(policy.tokenizer.encode(e.references[0])) for e in examples]  # BPE tokens
    assert results["mean_length"] == pytest.approx(np.mean(reference_lengths))
    assert np.isfinite(results["lm_score"]) and results["lm_score"] < 0
    assert results["method"] == ("greedy" if method == "greedy" else "beam4")


def test_decode_copies_with_a_trained_hf_policy(trained):
    policy, _ = trained
    assert decode(policy, ["a b c", "f e d"]) == ["a b c", "f e d"]
    best = decode(policy, "a b c", method="beam", num_return=2)
    assert [text for text, _ in best][0] == "a b c" and best[0][1] > best[1][1]
    # The same model never bound to an env has no widths: the prompts set theirs, max_new_tokens is asked for.
    unbound = HFPolicy(policy.model, policy.tokenizer.hf_tokenizer, device="cpu").eval()
    assert unbound.max_new_tokens is None
    with pytest.raises(ValueError, match="max_new_tokens is needed"):
        decode(unbound, ["a b c"])
    assert decode(unbound, ["a b c", "f e d"], max_new_tokens=4) == ["a b c", "f e d"]


def test_the_evaluation_lm_is_kept_per_tokenizer(hf_gpt2_dir):
    """One task (``make_task`` caches it) spoken by two tokenizers: each gets the n-gram model of its own ids."""
    word, bpe = (
        gym.make("TextGen-Copy-v0", **SMALL_COPY).unwrapped.setup,
        copy_env(hf_gpt2_dir).unwrapped.setup,
    )
    assert word.task is bpe.task
    word_lm, bpe_lm = evaluation_lm(word), evaluation_lm(bpe)
    assert word_lm.vocab_size == word.tokenizer.vocab_size and bpe_lm.vocab_size == bpe.tokenizer.vocab_size
    tok = bpe.tokenizer
    train = [tok.encode(r) for e in bpe.task.examples("train") for r in e.references]
    fresh = KneserNeyLM(order=3).fit(train, tok.vocab_size, tok.bos_id, tok.eos_id)
    test = [tok.encode(e.references[0]) for e in bpe.task.examples("test")]
    width = max(map(len, test))
    ids = np.array([t + [tok.eos_id] * (width - len(t)) for t in test])
    lengths = np.array([len(t) for t in test])
    np.testing.assert_allclose(bpe_lm.sequence_logprob(ids, lengths), fresh.sequence_logprob(ids, lengths))


def test_eval_callback_keeps_the_best_hf_policy_as_a_folder(hf_gpt2_dir, tmp_path):
    env = copy_env(hf_gpt2_dir)
    callback = TextEvalCallback(env, eval_freq=2, max_examples=10, best_model_save_path=tmp_path)
    PPO(new_policy(hf_gpt2_dir, env), env, seed=0, n_envs=8, device="cpu").learn(160, callback=callback)
    assert len(callback.evaluations) >= 2
    assert [p.name for p in tmp_path.iterdir()] == ["best_policy"]
    assert (tmp_path / "best_policy" / "lmrl_gym_policy.json").is_file()
    saved = callback.best_policy(env)
    assert isinstance(saved, HFPolicy)
    results = evaluate(saved, env, split="validation", max_examples=10)
    assert results["mean_reward"] == pytest.approx(callback.best)


# ---------------------------------------------------------------------- IRL


def test_irl_with_an_hf_policy_on_the_oracle_task(hf_gpt2_dir):
    env = gym.make("TextGen-Oracle-v0", tokenizer=str(hf_gpt2_dir))
    tok = env.unwrapped.tokenizer
    torch.manual_seed(0)
    policy = new_policy(hf_gpt2_dir, env)
    small = {"n_layer": 1, "n_embd": 32, "n_head": 2}
    irl = IRL(policy, env, n_envs=4, seed=0, reward_kwargs=small, expert_batch_size=16, device="cpu")
    network = irl.reward_model
    # Built for the env's ids: one row per action; the env's pad id (== vocab_size) is never embedded.
    assert network.config.vocab_size == tok.vocab_size == tok.pad_id
    reward_before = [p.detach().clone() for p in network.parameters()]
    policy_before = [p.detach().clone() for p in policy.parameters()]
    stats = []

    def three_iterations(local_vars, _globals):
        stats.append(local_vars["reward_stats"])
        return len(stats) < 3

    irl.learn(100_000, callback=three_iterations)
    assert len(stats) == 3 and all(np.isfinite(s["reward_loss"]) for s in stats)
    assert stats[-1]["expert_return"] > stats[-1]["sample_return"]
    assert not all(torch.equal(a, b) for a, b in zip(reward_before, network.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(policy_before, policy.parameters(), strict=True))
    scores = irl.score(["a b", "c"], ["c d e", "f"])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    # Padded prompts (pad == vocab_size) score as unpadded ones: the padding is never read.
    prompts, prompt_lengths, actions, lengths = irl.demonstrations.batch(torch.arange(8), torch.device("cpu"))
    assert (prompts == tok.pad_id).any()
    refilled = prompts.masked_fill(prompts == tok.pad_id, 0)
    with torch.no_grad():
        padded = network.token_rewards(prompts, prompt_lengths, actions, lengths)
        assert torch.equal(padded, network.token_rewards(refilled, prompt_lengths, actions, lengths))


# ---------------------------------------------------------------------- LoRA


def named(policy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


def is_adapter_or_value_head(name: str) -> bool:
    return "lora_" in name or name.startswith("value_head.")


def test_lora_trains_only_the_adapters_and_the_value_head(hf_gpt2_dir):
    env = copy_env(hf_gpt2_dir)
    torch.manual_seed(0)
    policy = new_policy(hf_gpt2_dir, env, lora=lora_config())
    before = named(policy)
    adapters_and_head = set(filter(is_adapter_or_value_head, before))
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == adapters_and_head
    PPO(policy, env, seed=0, n_envs=8, kl_coef=0.1, learning_rate=1e-3, device="cpu").learn(96)
    after = named(policy)
    assert after.keys() == before.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == adapters_and_head  # every adapter matrix and the value head moved, nothing else
    assert len(changed) < len(before) // 4


def test_lora_kl_reference_is_the_policy_as_learn_found_it_held_as_adapters_only(hf_gpt2_dir):
    env = copy_env(hf_gpt2_dir)
    torch.manual_seed(0)
    policy = new_policy(hf_gpt2_dir, env, lora=lora_config())
    pretrain(policy, env, epochs=1)  # the adapters move before RL starts: the reference is not the base model
    model = PPO(policy, env, seed=0, n_envs=8, kl_coef=0.1, learning_rate=1e-3, device="cpu")
    first = {}
    update = model.train

    def spy(traj):
        if not first:  # the first rollout, before the first update
            batch = traj.unpack()
            args = (batch.prompts, batch.tokens, batch.lengths)
            policy.eval()
            with torch.no_grad():
                first["args"], first["mask"] = args, batch.mask
                first["reference"] = model.reference_policy.evaluate_sequences(*args).log_probs
                first["policy"] = policy.evaluate_sequences(*args).log_probs
                with policy.model.disable_adapter():
                    first["base"] = policy.evaluate_sequences(*args).log_probs
        return update(traj)

    model.train = spy
    model.learn(96)
    reference = model.reference_policy
    assert isinstance(reference, LoraReference)
    assert torch.equal(first["reference"], first["policy"])
    assert (first["reference"] - first["base"]).abs()[first["mask"]].max() > 1e-3
    with torch.no_grad():
        later_reference = reference.evaluate_sequences(*first["args"]).log_probs
        later_policy = policy.evaluate_sequences(*first["args"]).log_probs
    assert torch.equal(later_reference, first["reference"])  # frozen
    assert (later_policy - later_reference).abs()[first["mask"]].max() > 1e-3  # the updates moved the policy
    # No second base model: the reference's tensors are the adapter matrices and the value head.
    state = reference.state_dict()
    adapters = {n for n in named(policy) if "lora_" in n}
    assert set(state) == {n.replace("model.", "adapter.", 1) for n in adapters} | {
        "value_head.weight",
        "value_head.bias",
    }
    base = sum(p.numel() for n, p in policy.named_parameters() if not is_adapter_or_value_head(n))
    assert sum(t.numel() for t in state.values()) < base / 20
    assert not any(isinstance(m, torch.nn.Embedding) for m in reference.modules())


def test_lora_algorithm_checkpoint_restores_adapters_exactly_and_resumes(hf_gpt2_dir, tmp_path):
    env = copy_env(hf_gpt2_dir)
    kwargs = {"seed": 1, "n_envs": 8, "kl_coef": 0.1, "learning_rate": 1e-3, "device": "cpu"}
    torch.manual_seed(0)  # the adapters' initial weights
    straight = PPO(new_policy(hf_gpt2_dir, env, lora=lora_config()), env, **kwargs)
    straight.learn(64).learn(64, reset_num_timesteps=False)

    env = copy_env(hf_gpt2_dir)
    torch.manual_seed(0)
    first = PPO(new_policy(hf_gpt2_dir, env, lora=lora_config()), env, **kwargs).learn(64)
    first.save(tmp_path / "lora.zip")
    with zipfile.ZipFile(tmp_path / "lora.zip") as archive:
        names = archive.namelist()
        adapter_config = json.loads(archive.read("policy/adapter_config.json"))
    # Adapters only, no base weights; the base model is named by the absolute path of its local folder.
    assert "policy/adapter_model.safetensors" in names and "policy/model.safetensors" not in names
    base_folder = str(hf_gpt2_dir.resolve())
    assert adapter_config["base_model_name_or_path"] == base_folder
    loaded = PPO.load(tmp_path / "lora.zip", env=copy_env(hf_gpt2_dir), device="cpu")
    saved, restored = named(first.policy), named(loaded.policy)
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[n], restored[n]) for n in saved)
    trainable = {n for n, p in loaded.policy.named_parameters() if p.requires_grad}
    assert trainable == set(filter(is_adapter_or_value_head, saved))
    reference = first.reference_policy.state_dict()
    assert all(torch.equal(v, loaded.reference_policy.state_dict()[k]) for k, v in reference.items())
    loaded.learn(64, reset_num_timesteps=False)
    resumed, uninterrupted = named(loaded.policy), named(straight.policy)
    assert all(torch.equal(resumed[n], uninterrupted[n]) for n in resumed)
    loaded.policy.save(tmp_path / "again")  # read from a temporary folder, it still names the real base
    again = json.loads((tmp_path / "again" / "adapter_config.json").read_text())
    assert again["base_model_name_or_path"] == base_folder


def test_a_lora_checkpoint_of_a_relative_base_folder_loads_from_anywhere(hf_gpt2_dir, tmp_path, monkeypatch):
    """The base is recorded by absolute path (a relative one would send a later load to the hub), and a
    base folder that is gone is a clear error, not a network failure."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(hf_gpt2_dir, base)
    monkeypatch.chdir(tmp_path)
    policy = HFPolicy.from_pretrained("base", device="cpu", lora=lora_config())
    policy.save(tmp_path / "policy")
    monkeypatch.chdir(hf_gpt2_dir)  # elsewhere: "base" means nothing here
    loaded = HFPolicy.load(tmp_path / "policy", device="cpu")
    saved, restored = named(policy), named(loaded)
    assert saved.keys() == restored.keys() and all(torch.equal(saved[n], restored[n]) for n in saved)
    shutil.rmtree(base)
    with pytest.raises(ValueError, match="base model in the folder .*base, which no longer exists"):
        HFPolicy.load(tmp_path / "policy", device="cpu")


def test_evaluate_scores_bleu_on_words_and_reports_prompt_only_data_as_n_a(hf_gpt2_dir, monkeypatch):
    """On a Hugging Face tokenizer the evaluator's BLEU is sacreBLEU's on the decoded texts (13a words, not
    subword ids); on data without references the reference metrics are NaN ("n/a") and the reward stays."""
    import sacrebleu
    from datasets import Dataset

    from agents import format_evaluation

    folder = str(hf_gpt2_dir)
    env = gym.make(
        "TextGen-Copy-v0", tokenizer=folder, task_kwargs={"num_symbols": 6, "min_length": 3, "max_length": 3}
    )
    policy = HFPolicy.from_pretrained(folder, env=env, device="cpu")
    import agents.evaluation

    outputs = []

    def recording_decode(*args, **kwargs):  # the outputs evaluate scores, to score them again by hand
        out = decode_ids(*args, **kwargs)
        outputs.append(out)
        return out

    monkeypatch.setattr(agents.evaluation, "decode_ids", recording_decode)
    result = evaluate(policy, env, split="test")
    data = env.unwrapped.setup.encoded("test")
    texts = [
        policy.tokenizer.decode(t[:n].tolist())
        for out in outputs
        for t, n in zip(out.tokens[:, 0], out.lengths[:, 0], strict=True)
    ]
    refs = [example.references for example in data.examples]
    expected = sacrebleu.corpus_bleu(texts, [[r[0] for r in refs]]).score
    assert result["bleu"] == pytest.approx(expected, abs=1e-9)
    assert "13a" in result["bleu_signature"]

    prompts = Dataset.from_list([{"prompt": f"{x} b {y}"} for x in "abcdef" for y in "abcde"])
    prompt_only = gym.make(
        "TextGen-v0",
        task=prompts,
        tokenizer=folder,
        reward=lambda text, refs, prompt: len(text),
        max_new_tokens=4,
    )
    result = evaluate(policy, prompt_only, split="test")
    assert np.isnan(result["bleu"]) and np.isnan(result["chrf"]) and np.isnan(result["lm_score"])
    assert np.isfinite(result["mean_reward"]) and result["mean_reward"] > 0
    assert "| bleu | n/a |" in format_evaluation(result)


def test_greedy_decoding_is_deterministic_after_training_steps_with_dropout(hf_gpt2_dir):
    """GPT-2 has dropout 0.1: a freshly loaded policy is in eval mode like its model, and decode turns
    dropout off whatever mode the caller left the policy in, so greedy decoding repeats itself."""
    policy = HFPolicy.from_pretrained(hf_gpt2_dir, device="cpu")
    assert not policy.training and not policy.model.training
    policy.train()  # e.g. left so by pretrain
    prompts = torch.as_tensor([policy.tokenizer.encode("a b c"), policy.tokenizer.encode("a c b")]).long()
    first = decode_ids(policy, prompts, max_new_tokens=6)
    second = decode_ids(policy, prompts, max_new_tokens=6)
    assert torch.equal(first.tokens, second.tokens) and policy.training
