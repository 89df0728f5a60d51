"""The transformer as an unmodified Stable-Baselines3 / sb3-contrib actor-critic policy."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO

from agents.policy import TransformerPolicy
from agents.sb3 import (
    MaskableTransformerActorCriticPolicy,
    SB3VecEnv,
    TransformerActorCriticPolicy,
    TransformerFeaturesExtractor,
)
from lmrl_gym import TextGenVectorEnv

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}
# Prompts of 1 to 4 symbols: right-padded prompts of different lengths in one batch.
RAGGED_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 1, "max_length": 4}}
INVALID_IDS = [0, 1, 3]  # pad, bos, unk of lmrl_gym.Tokenizer


def constant_lr(_: float) -> float:
    return 1e-3


def ragged_observations(env: gym.Env, rows: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of int32 observations: prompts of every length, prefixes of every length 0..T."""
    setup = env.unwrapped.setup
    rng = np.random.default_rng(seed)
    prompts = setup.data.prompts[rng.choice(len(setup.data.prompts), size=rows, replace=False)]
    width = setup.max_new_tokens
    prefixes = np.zeros((rows, width), dtype=np.int32)
    for i in range(rows):
        length = i % (width + 1)
        prefixes[i, :length] = rng.integers(4, setup.tokenizer.vocab_size, size=length)
    assert len({int((p != 0).sum()) for p in prompts}) > 1, "the batch must mix prompt lengths"
    return {"prompt_ids": prompts.astype(np.int32), "prefix_ids": prefixes}


def test_import_registers_the_policy_alias():
    assert PPO.policy_aliases["TransformerPolicy"] is TransformerActorCriticPolicy
    assert A2C.policy_aliases["TransformerPolicy"] is TransformerActorCriticPolicy
    assert MaskablePPO.policy_aliases["TransformerPolicy"] is MaskableTransformerActorCriticPolicy


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_sb3_policy_outputs_equal_transformer_policy_forward(arch):
    env = gym.make("TextGen-Copy-v0", **RAGGED_COPY)
    torch.manual_seed(0)
    transformer_policy = TransformerPolicy.for_env(env, arch=arch, n_layer=2, n_embd=32, device="cpu")
    policy = TransformerActorCriticPolicy(
        env.observation_space, env.action_space, constant_lr, pretrained=transformer_policy
    )
    obs = ragged_observations(env)
    obs_tensor, _ = policy.obs_to_tensor(obs)  # SB3's path: int32 -> tensors -> float32 in extract_features
    with torch.no_grad():
        expected_logits, expected_values = transformer_policy(obs)
        features = policy.extract_features(obs_tensor)
        logits = policy.action_net(features)
        distribution = policy.get_distribution(obs_tensor).distribution
        values = policy.predict_values(obs_tensor)

    assert isinstance(policy.features_extractor, TransformerFeaturesExtractor)
    assert features.shape == (12, 32) and values.shape == (12, 1)
    # Both mask pad / bos / unk with -inf; assert_close requires infinities at the same places.
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        distribution.logits, torch.log_softmax(expected_logits, -1), rtol=1e-5, atol=1e-5
    )
    assert torch.isneginf(logits[:, INVALID_IDS]).all()
    torch.testing.assert_close(values.squeeze(-1), expected_values, rtol=1e-5, atol=1e-5)


def test_pretrained_weights_are_copied_exactly_without_orthogonal_init():
    env = gym.make("TextGen-Copy-v0", **SMALL_COPY)
    torch.manual_seed(0)
    transformer_policy = TransformerPolicy.for_env(env, n_embd=32, device="cpu")
    pretrained = {k: v.clone() for k, v in transformer_policy.model.state_dict().items()}
    model = PPO("TransformerPolicy", env, policy_kwargs={"pretrained": transformer_policy}, device="cpu")
    transformer = model.policy.transformer

    assert model.policy.ortho_init is False
    for name, value in transformer.state_dict().items():
        assert torch.equal(value, pretrained[name]), name
    # The heads are the transformer's own (tied lm_head), not fresh layers.
    assert model.policy.action_net.lm_head is transformer.lm_head
    assert transformer.lm_head.weight is transformer.token_embedding.weight
    assert model.policy.value_net is transformer.value_head
    # A copy: training the SB3 policy leaves the TransformerPolicy as it was.
    with torch.no_grad():
        transformer.token_embedding.weight.add_(1.0)
    for name, value in transformer_policy.model.state_dict().items():
        assert torch.equal(value, pretrained[name]), name

    with pytest.raises(ValueError, match="ortho_init=True would re-initialise"):
        PPO("TransformerPolicy", env, policy_kwargs={"pretrained": transformer_policy, "ortho_init": True})


@pytest.mark.parametrize("policy_class", [TransformerActorCriticPolicy, MaskableTransformerActorCriticPolicy])
def test_invalid_ids_are_never_sampled_and_losses_stay_finite(policy_class):
    env = gym.make("TextGen-Copy-v0", **RAGGED_COPY)
    torch.manual_seed(0)
    policy = policy_class(env.observation_space, env.action_space, constant_lr, n_layer=1, n_embd=32)
    transformer = policy.transformer
    with torch.no_grad():  # every hidden state = 1, and only the invalid ids' rows align with it
        transformer.ln_f.weight.zero_()
        transformer.ln_f.bias.fill_(1.0)
        transformer.token_embedding.weight[INVALID_IDS] = 1.0
    obs = ragged_observations(env, rows=16)
    obs = {k: np.repeat(v, 16, axis=0) for k, v in obs.items()}  # 256 rows
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        unmasked = torch.softmax(transformer.lm_head(policy.extract_features(obs_tensor)), -1)
    assert (unmasked[:, INVALID_IDS].sum(-1) > 0.99).all()  # unmasked, they would take all the mass

    actions = np.concatenate([policy.predict(obs)[0] for _ in range(20)])  # 5120 samples
    assert not np.isin(actions, INVALID_IDS).any()
    assert not np.isin(policy.predict(obs, deterministic=True)[0], INVALID_IDS).any()

    # What PPO's loss needs: log-probabilities, entropy and their gradients, all finite.
    kwargs = {}
    if policy_class is MaskableTransformerActorCriticPolicy:
        # An env mask that allows unk while the policy masks it: sb3-contrib's masked entropy would be NaN
        # for a -inf logit there, which is why this policy masks with -1e8.
        masks = np.ones((256, env.action_space.n), dtype=bool)
        masks[:, [0, 1]] = False
        kwargs["action_masks"] = torch.as_tensor(masks)
    values, log_prob, entropy = policy.evaluate_actions(obs_tensor, torch.as_tensor(actions[:256]), **kwargs)
    (log_prob.sum() + entropy.sum() + values.sum()).backward()
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


def test_pretrained_policy_must_fit_the_env():
    env = gym.make("TextGen-Copy-v0", **SMALL_COPY)  # 10 tokens, prompts of 3, prefixes of 4
    other_vocab = TransformerPolicy.for_env(
        gym.make("TextGen-Copy-v0", task_kwargs={"num_symbols": 8, "min_length": 3, "max_length": 3}),
        n_embd=32,
        device="cpu",
    )
    with pytest.raises(ValueError, match=r"vocabulary \(12 tokens\) does not match .* Discrete\(10\)"):
        PPO("TransformerPolicy", env, policy_kwargs={"pretrained": other_vocab})
    other_widths = TransformerPolicy.for_env(
        gym.make("TextGen-Copy-v0", task_kwargs={"num_symbols": 6, "min_length": 3, "max_length": 5}),
        n_embd=32,
        device="cpu",
    )
    with pytest.raises(ValueError, match="max_prompt_tokens=5, max_new_tokens=6; the env's .* 3 and 4"):
        PPO("TransformerPolicy", env, policy_kwargs={"pretrained": other_widths})
    fits = TransformerPolicy.for_env(env, n_embd=32, device="cpu")
    with pytest.raises(ValueError, match="either pretrained or transformer sizes"):
        PPO("TransformerPolicy", env, policy_kwargs={"pretrained": fits, "n_embd": 64})
    with pytest.raises(ValueError, match="net_arch must be empty"):
        PPO("TransformerPolicy", env, policy_kwargs={"net_arch": [64]})
    with pytest.raises(ValueError, match="TextGen observation space"):
        TransformerActorCriticPolicy(gym.spaces.Box(0, 9, (7,)), env.action_space, constant_lr)


def test_a2c_and_maskable_ppo_train_and_models_save_and_load(tmp_path):
    venv = SB3VecEnv(TextGenVectorEnv(num_envs=4, task="copy", info_text=False, **SMALL_COPY))
    obs = venv.reset()
    kwargs = {"n_embd": 32, "n_layer": 1}
    a2c = A2C("TransformerPolicy", venv, policy_kwargs={**kwargs, "arch": "seq2seq"}, n_steps=8, seed=0)
    a2c.learn(128)
    maskable = MaskablePPO("TransformerPolicy", venv, policy_kwargs=kwargs, n_steps=16, batch_size=32, seed=0)
    maskable.learn(128)
    assert isinstance(maskable.policy, MaskableTransformerActorCriticPolicy)

    for model in (a2c, maskable):
        model.save(tmp_path / "model.zip")
        loaded = type(model).load(tmp_path / "model.zip", device="cpu")
        np.testing.assert_array_equal(
            loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
        )
        model.policy.save(tmp_path / "policy.pt")  # rebuilt from the sizes saved with it
        policy = type(model.policy).load(tmp_path / "policy.pt", device="cpu")
        obs_tensor, _ = policy.obs_to_tensor(obs)
        with torch.no_grad():
            torch.testing.assert_close(
                policy.predict_values(obs_tensor), model.policy.predict_values(obs_tensor)
            )


def mean_episode_reward(model: PPO, deterministic: bool, episodes: int = 200) -> tuple[float, float]:
    """Mean return of the first episode of ``episodes`` test-split envs from fixed seeds (and a fixed
    sampling seed), and the fraction of them that hit the ``max_new_tokens`` cut-off."""
    env = TextGenVectorEnv(num_envs=episodes, task="copy", split="test", info_text=False, **SMALL_COPY)
    obs, _ = env.reset(seed=1000)
    with torch.random.fork_rng(devices=[]):  # SB3 samples from the global generator: leave its state alone
        torch.manual_seed(0)
        return _play_first_episodes(model, env, obs, deterministic, episodes)


def _play_first_episodes(model, env, obs, deterministic, episodes):
    returns = np.zeros(episodes)
    done = np.zeros(episodes, dtype=bool)
    cut_off = np.zeros(episodes, dtype=bool)
    while not done.all():
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, terminated, truncated, infos = env.step(action)
        returns += np.where(done, 0.0, rewards)  # count each env's first episode only
        if "final_info" in infos:
            cut_off |= ~done & infos["final_info"]["length_limit"]
        done |= terminated | truncated
    return float(returns.mean()), float(cut_off.mean())


def sb3_ppo_as_the_example_builds_it(seed: int) -> PPO:
    """``examples/sb3_ppo.py``'s settings."""
    venv = SB3VecEnv(TextGenVectorEnv(num_envs=16, task="copy", info_text=False, **SMALL_COPY))
    model = PPO(
        "TransformerPolicy",
        venv,
        policy_kwargs={"n_embd": 64, "n_layer": 2},
        learning_rate=1e-3,
        n_steps=32,
        batch_size=128,
        n_epochs=4,
        seed=seed,
        device="cpu",
    )
    return model


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_unmodified_sb3_ppo_learns_copy_with_the_transformer_policy(one_thread, seed):
    """Before the cut-off was reported as terminal, SB3 bootstrapped V(s_T) there (V averaged 1.2, above the
    largest return of 1.0) and greedy play wrote until the cut-off: 0.354 / 0.313 (seeds 0 / 1) after
    16,384 steps, every test episode cut off. 24,576 steps since issue 13's keyed sampler changed the policy's
    numerics: at 16,384 seeds 0 / 1 / 2 reached 0.976 / 0.880 / 0.826, at 24,576 1.000 each."""
    model = sb3_ppo_as_the_example_builds_it(seed)
    before, _ = mean_episode_reward(model, deterministic=True)
    model.learn(total_timesteps=24_576)
    greedy, cut_off = mean_episode_reward(model, deterministic=True)
    sampled, _ = mean_episode_reward(model, deterministic=False)
    print(f"\nSB3 PPO seed {seed}, 24,576 steps: greedy {before:.3f} -> {greedy:.3f} ({cut_off:.0%} cut off)")
    print(f"sampled after: {sampled:.3f}")
    assert greedy >= 0.9 and cut_off < 0.1, (greedy, cut_off)
