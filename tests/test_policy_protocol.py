"""The Policy protocol (``agents.policies.base``), checked on every policy class through the protocol alone.

Parametrised over :data:`POLICY_FACTORIES` (id -> a function of an env returning a policy): a new policy
class is tested by adding one line there (and, where its env differs from the default, one line to
:data:`ENV_FACTORIES`, e.g. an env speaking a Hugging Face tokenizer built from a session fixture).

The reference for incremental decoding is ``policy(obs)``: next-token logits from the env's observation,
the whole prefix recomputed, a code path that shares no cache with ``start`` / ``step`` / ``feed``.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import pytest
import torch
from torch import nn

import lmrl_gym  # noqa: F401  (registers the ids)
from agents.algorithms import PPO
from agents.policies import Policy, TransformerPolicy, check_policy
from agents.rollout import collect_trajectories
from lmrl_gym.vector_env import TextGenVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")

ENV_ID = "TextGen-Copy-v0"
ATOL = 1e-5

POLICY_FACTORIES: dict[str, Callable[[gym.Env], Policy]] = {
    "transformer-causal": lambda env: TransformerPolicy.for_env(
        env, arch="causal", n_layer=2, n_head=2, n_embd=32, device="cpu"
    ),
    "transformer-seq2seq": lambda env: TransformerPolicy.for_env(
        env, arch="seq2seq", n_layer=2, n_head=2, n_embd=32, device="cpu"
    ),
}


def hf_policy_for(env: gym.Env) -> Policy:
    """The HFPolicy of the model whose folder the env's tokenizer was loaded from."""
    from agents.policies.hf import HFPolicy

    folder = env.unwrapped.tokenizer.hf_tokenizer.name_or_path
    return HFPolicy.from_pretrained(folder, env=env, device="cpu")


POLICY_FACTORIES["hf-gpt2"] = hf_policy_for
POLICY_FACTORIES["hf-t5"] = hf_policy_for
# Our own transformer on a Hugging Face tokenizer's env: the env's pad id (= vocab size) has no row in it.
POLICY_FACTORIES["transformer-on-bpe"] = POLICY_FACTORIES["transformer-causal"]
# Policies whose env is not the default (the copy task's word tokenizer): id -> env from the test request.
ENV_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], gym.Env]] = {
    "hf-gpt2": lambda request: gym.make(ENV_ID, tokenizer=str(request.getfixturevalue("hf_gpt2_dir"))),
    "hf-t5": lambda request: gym.make(
        ENV_ID, tokenizer=str(request.getfixturevalue("hf_t5_dir")), num_actions=428
    ),
    "transformer-on-bpe": lambda request: gym.make(
        ENV_ID, tokenizer=str(request.getfixturevalue("hf_tokenizer_dir"))
    ),
}


@pytest.fixture(params=sorted(POLICY_FACTORIES))
def case(request) -> tuple[Policy, gym.Env, Callable[[gym.Env], Policy]]:
    """``(policy in eval mode, its env, its factory)``."""
    if request.param.startswith("hf-") or request.param.endswith("-on-bpe"):
        pytest.importorskip("transformers")
    env = ENV_FACTORIES.get(request.param, lambda _: gym.make(ENV_ID))(request)
    factory = POLICY_FACTORIES[request.param]
    torch.manual_seed(0)
    return factory(env).eval(), env, factory


# ---------------------------------------------------------------------- helpers


def prompt_batch(env: gym.Env, rows=(13, 3, 0, 9)) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompts of different lengths (8, 2, 6, 4 words for the copy task) and their lengths."""
    data = env.unwrapped.setup.data
    prompts = torch.as_tensor(data.prompts[list(rows)], dtype=torch.long)
    return prompts, torch.as_tensor(data.prompt_lengths[list(rows)])


def random_actions(policy: Policy, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Ids the policy may generate (never pad: the observation's prefix is padded with it)."""
    valid = [i for i in range(policy.vocab_size) if i not in set(policy.invalid_ids)]
    index = torch.randint(len(valid), shape, generator=torch.Generator().manual_seed(seed))
    return torch.tensor(valid)[index]


def recomputed(policy: Policy, prompts: torch.Tensor, prefixes: list[list[int]]):
    """``policy(obs)`` with each row's prefix written into the observation: ``(logits, values)``."""
    width = policy.max_new_tokens
    prefix_ids = torch.full((len(prefixes), width), policy.tokenizer.pad_id, dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        prefix_ids[row, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
    with torch.no_grad():
        return policy({"prompt_ids": prompts, "prefix_ids": prefix_ids})


def assert_close_where_finite(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(actual), torch.isinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(actual[finite], expected[finite], atol=ATOL, rtol=0)


def assert_matches_recompute(policy, prompts, prefixes, logits, values) -> None:
    expected_logits, expected_values = recomputed(policy, prompts, prefixes)
    assert_close_where_finite(logits, expected_logits)
    torch.testing.assert_close(values, expected_values, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- the protocol


def test_implements_the_protocol(case):
    policy, env, _ = case
    assert isinstance(policy, Policy)
    check_policy(policy)
    assert policy.vocab_size == env.action_space.n
    assert isinstance(policy.value_head, nn.Module)


def test_check_policy_names_what_is_missing():
    class Half(nn.Module):
        def start(self, prompt_ids):
            return None

    assert not isinstance(Half(), Policy)
    with pytest.raises(TypeError, match="Half does not implement the Policy protocol.*'feed'.*'select'"):
        check_policy(Half())


@torch.no_grad()
def test_cached_decoding_equals_the_full_forward_with_prompts_of_different_lengths(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    actions = random_actions(policy, (len(prompts), 5), seed=0)
    logits, state = policy.start(prompts, lengths)
    assert logits.shape == (len(prompts), policy.vocab_size) and state.values.shape == (len(prompts),)
    for t in range(actions.shape[1] + 1):
        assert_matches_recompute(policy, prompts, actions[:, :t].tolist(), logits, state.values)
        if t < actions.shape[1]:
            logits, state = policy.step(state, actions[:, t])


@torch.no_grad()
def test_feed_of_ragged_forced_tokens_then_steps_equal_the_full_forward(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    first = random_actions(policy, (4, 2), seed=1)
    forced = random_actions(policy, (4, 3), seed=2)
    counts = torch.tensor([3, 0, 1, 2])  # ragged, one row given none
    after = random_actions(policy, (4, 2), seed=3)
    logits, state = policy.start(prompts, lengths)
    for t in range(2):
        logits, state = policy.step(state, first[:, t])
    before_feed = logits.clone()
    logits, state = policy.feed(state, forced, counts)
    prefixes = [first[b].tolist() + forced[b, : counts[b]].tolist() for b in range(4)]
    assert_matches_recompute(policy, prompts, prefixes, logits, state.values)
    assert torch.equal(logits[1], before_feed[1])  # given no token: its logits are left as they were
    for t in range(2):
        logits, state = policy.step(state, after[:, t])
        prefixes = [p + [int(after[b, t])] for b, p in enumerate(prefixes)]
        assert_matches_recompute(policy, prompts, prefixes, logits, state.values)
    # A second ragged feed on top of the first one's holes.
    logits, state = policy.feed(state, forced[:, :2], torch.tensor([0, 2, 2, 1]))
    prefixes = [p + forced[b, : [0, 2, 2, 1][b]].tolist() for b, p in enumerate(prefixes)]
    assert_matches_recompute(policy, prompts, prefixes, logits, state.values)


@torch.no_grad()
def test_feed_of_nothing_changes_nothing(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    logits, state = policy.start(prompts, lengths)
    for tokens, counts in (
        (torch.zeros(4, 0, dtype=torch.long), torch.zeros(4)),
        (prompts[:, :2], torch.zeros(4)),
    ):
        fed, state = policy.feed(state, tokens, counts.long())
        assert torch.equal(fed, logits)
    action = random_actions(policy, (4,), seed=4)
    logits, state = policy.step(state, action)
    assert_matches_recompute(policy, prompts, action[:, None].tolist(), logits, state.values)


@torch.no_grad()
def test_feed_of_one_token_per_row_equals_step(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    actions = random_actions(policy, (4, 3), seed=5)
    _, stepped = policy.start(prompts, lengths)
    _, fed = policy.start(prompts, lengths)
    ones = torch.ones(4, dtype=torch.long)
    for t in range(3):
        step_logits, stepped = policy.step(stepped, actions[:, t])
        feed_logits, fed = policy.feed(fed, actions[:, t : t + 1], ones)
        assert_close_where_finite(feed_logits, step_logits)
        torch.testing.assert_close(fed.values, stepped.values, atol=ATOL, rtol=0)


@torch.no_grad()
def test_select_keeps_the_chosen_rows_state(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    actions = random_actions(policy, (4, 4), seed=6)
    _, state = policy.start(prompts, lengths)
    for t in range(2):
        _, state = policy.step(state, actions[:, t])
    rows = torch.tensor([0, 2, 3])
    state = policy.select(state, rows)
    assert state.values.shape == (3,)
    logits, state = policy.feed(state, actions[rows, 2:], torch.tensor([2, 0, 1]))
    prefixes = [
        actions[r, :2].tolist() + actions[r, 2 : 2 + n].tolist()
        for r, n in zip([0, 2, 3], [2, 0, 1], strict=True)
    ]
    assert_matches_recompute(policy, prompts[rows], prefixes, logits, state.values)
    logits, state = policy.step(state, actions[rows, 3])
    prefixes = [p + [int(actions[r, 3])] for r, p in zip([0, 2, 3], prefixes, strict=True)]
    assert_matches_recompute(policy, prompts[rows], prefixes, logits, state.values)


@torch.no_grad()
def test_reorder_repeats_rows(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    action = random_actions(policy, (4,), seed=7)
    _, state = policy.start(prompts, lengths)
    index = torch.tensor([3, 3, 1])
    logits, state = policy.step(policy.reorder(state, index), action[index])
    assert_matches_recompute(policy, prompts[index], action[index, None].tolist(), logits, state.values)


@torch.no_grad()
def test_agent_mask_zeroes_the_other_tokens_and_leaves_the_agents(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    tokens = random_actions(policy, (4, 6), seed=8)
    episode_lengths = torch.tensor([6, 3, 5, 1])
    agent = torch.rand(4, 6, generator=torch.Generator().manual_seed(9)) < 0.5
    full = policy.evaluate_sequences(prompts, tokens, episode_lengths, lengths)
    masked = policy.evaluate_sequences(prompts, tokens, episode_lengths, lengths, agent_mask=agent)
    inside = torch.arange(6)[None, :] < episode_lengths[:, None]
    for name in ("log_probs", "entropy", "values"):
        got, unmasked = getattr(masked, name), getattr(full, name)
        assert (got[~agent] == 0).all() and (got[~inside] == 0).all()
        assert torch.equal(got[agent & inside], unmasked[agent & inside])
    assert (full.log_probs[inside] < 0).all()


@torch.no_grad()
def test_sequence_scores_match_incremental_decoding(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    tokens = random_actions(policy, (4, 5), seed=10)
    episode_lengths = torch.tensor([5, 2, 4, 3])
    scores = policy.evaluate_sequences(prompts, tokens, episode_lengths, lengths)
    logits, state = policy.start(prompts, lengths)
    log_probs, values = [], []
    for t in range(5):
        log_probs.append(torch.log_softmax(logits, -1).gather(1, tokens[:, t : t + 1]).squeeze(1))
        values.append(state.values)
        logits, state = policy.step(state, tokens[:, t])
    inside = torch.arange(5)[None, :] < episode_lengths[:, None]
    torch.testing.assert_close(scores.log_probs[inside], torch.stack(log_probs, 1)[inside], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores.values[inside], torch.stack(values, 1)[inside], atol=ATOL, rtol=0)
    # sequence_logits: the whole distribution at every state, the cached logits to the same tolerance.
    every_logits, every_values = policy.sequence_logits(prompts, tokens, episode_lengths, lengths)
    assert every_logits.shape == (4, 5, policy.vocab_size)
    assert torch.isinf(every_logits[..., list(policy.invalid_ids)]).all()
    chosen = torch.log_softmax(every_logits, -1).gather(2, tokens[..., None].long()).squeeze(2)
    torch.testing.assert_close(chosen[inside], torch.stack(log_probs, 1)[inside], atol=ATOL, rtol=0)
    torch.testing.assert_close(every_values[inside], torch.stack(values, 1)[inside], atol=ATOL, rtol=0)


@torch.no_grad()
def test_hidden_states_feed_the_value_head(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    tokens = random_actions(policy, (4, 5), seed=11)
    episode_lengths = torch.tensor([5, 2, 4, 1])
    hidden = policy.hidden_states(prompts, tokens, episode_lengths, lengths)
    assert hidden.shape[:2] == (4, 5) and hidden.dim() == 3
    inside = torch.arange(5)[None, :] < episode_lengths[:, None]
    assert (hidden[~inside] == 0).all()
    values = policy.value_head(hidden).squeeze(-1)
    scores = policy.evaluate_sequences(prompts, tokens, episode_lengths, lengths)
    torch.testing.assert_close(values[inside], scores.values[inside], atol=ATOL, rtol=0)


def test_log_likelihood_is_the_unmasked_language_model_and_differentiable(case):
    policy, env, _ = case
    prompts, lengths = prompt_batch(env)
    tokens = random_actions(policy, (4, 5), seed=12)
    episode_lengths = torch.tensor([5, 2, 4, 1])
    policy.train()
    log_likelihood = policy.log_likelihood(prompts, tokens, episode_lengths, lengths)
    inside = torch.arange(5)[None, :] < episode_lengths[:, None]
    assert (log_likelihood[~inside] == 0).all() and (log_likelihood[inside] < 0).all()
    log_likelihood.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    policy.eval()
    with torch.no_grad():
        scored = policy.evaluate_sequences(prompts, tokens, episode_lengths, lengths).log_probs
        again = policy.log_likelihood(prompts, tokens, episode_lengths, lengths)
    # The masked distribution gives the invalid ids' mass to the valid ones: never less likely there.
    assert (scored[inside] >= again[inside] - ATOL).all()


def test_frozen_copy_is_frozen_and_round_trips_its_state(case):
    policy, env, factory = case
    reference = policy.frozen_copy()
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    torch.manual_seed(1)
    other = factory(env).frozen_copy()  # other weights, until it loads the reference's state
    other.load_state_dict(reference.state_dict())
    prompts, lengths = prompt_batch(env)
    tokens = random_actions(policy, (4, 3), seed=13)
    with torch.no_grad():
        a = reference.evaluate_sequences(prompts, tokens, torch.tensor([3, 3, 3, 3]), lengths)
        b = other.evaluate_sequences(prompts, tokens, torch.tensor([3, 3, 3, 3]), lengths)
    assert torch.equal(a.log_probs, b.log_probs)


# ---------------------------------------------------------------------- users of the protocol


class CountingPolicy(TransformerPolicy):
    """Counts select calls; reorder (beam search's) must not be what a rollout drops rows with."""

    selected = 0

    def select(self, state, rows):
        type(self).selected += 1
        return super().select(state, rows)

    def reorder(self, state, index):
        raise AssertionError("a rollout drops rows with select")


def test_rollouts_drop_finished_rows_with_select():
    env = gym.make(ENV_ID)
    policy = CountingPolicy.for_env(env, n_layer=1, n_embd=16, device="cpu")
    with torch.no_grad():  # an untrained policy ends about one episode in 14 per step: rows get dropped
        policy.model.lm_head.weight[policy.tokenizer.eos_id] += 0.5
    venv = TextGenVectorEnv(num_envs=32, output="torch", info_text=False, **env.unwrapped.setup.kwargs)
    venv.reset(seed=0)
    traj = collect_trajectories(policy, venv, torch.Generator().manual_seed(0))
    assert CountingPolicy.selected > 0 and traj.num_episodes == 32


class WrappedPolicy(nn.Module):
    """A user's own policy: not a TransformerPolicy, only the protocol (each call delegated to one)."""

    def __init__(self, inner: TransformerPolicy) -> None:
        super().__init__()
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.max_prompt_tokens = inner.max_prompt_tokens
        self.max_new_tokens = inner.max_new_tokens
        self.value_head = inner.value_head

    vocab_size = property(lambda self: self.inner.vocab_size)
    device = property(lambda self: self.inner.device)
    invalid_ids = property(lambda self: self.inner.invalid_ids)

    def forward(self, obs):
        return self.inner(obs)

    def frozen_copy(self):
        import copy

        return copy.deepcopy(self).eval().requires_grad_(False)

    @classmethod
    def load(cls, path, env=None, device="auto"):
        return cls(TransformerPolicy.load(path, env, device))

    def __getattr__(self, name):
        if name in {"prompt_lengths", "check_env", "start", "step", "feed", "reorder", "select"} | {
            "hidden_states",
            "sequence_logits",
            "evaluate_sequences",
            "log_likelihood",
            "save",
        }:
            return getattr(self._modules["inner"], name)
        return super().__getattr__(name)


def test_algorithms_pretraining_and_evaluation_take_any_policy_of_the_protocol(tmp_path):
    from agents import evaluate, pretrain

    env = gym.make(ENV_ID, task_kwargs={"num_symbols": 6, "min_length": 3, "max_length": 3})
    torch.manual_seed(0)
    policy = WrappedPolicy(TransformerPolicy.for_env(env, n_layer=1, n_embd=16, device="cpu"))
    check_policy(policy)
    pretrain(policy, env, epochs=1)
    model = PPO(policy, env, n_envs=8, kl_coef=0.1, seed=0, device="cpu").learn(64)
    assert model.num_timesteps >= 64 and model.reference_policy is not None
    assert 0 <= evaluate(policy, env, split="validation", max_examples=4)["mean_reward"] <= 1
    # Checkpoints say which class wrote them: an unregistered class is told how to register.
    with pytest.raises(
        ValueError, match="WrappedPolicy is not a registered policy kind.*register_policy_kind"
    ):
        model.save(tmp_path / "model.zip")


def test_policy_kinds_read_file_and_folder_checkpoints_inside_an_algorithm_zip(tmp_path, monkeypatch):
    from agents.policies import registry

    env = gym.make(ENV_ID, task_kwargs={"num_symbols": 6, "min_length": 3, "max_length": 3})
    kind = registry.PolicyKind("folder-test", f"{__name__}:FolderPolicy", "policy")
    monkeypatch.setitem(registry.POLICY_KINDS, kind.name, kind)
    assert registry.policy_kind_of(TransformerPolicy.for_env(env, device="cpu")).name == "transformer"
    torch.manual_seed(0)
    policy = FolderPolicy.for_env(env, n_layer=1, n_embd=16, device="cpu")
    model = PPO(policy, env, n_envs=8, kl_coef=0.1, seed=0, device="cpu").learn(32)
    model.save(tmp_path / "model.zip")
    import zipfile

    names = zipfile.ZipFile(tmp_path / "model.zip").namelist()
    assert "policy/weights.pt" in names and "policy.pt" not in names
    loaded = PPO.load(tmp_path / "model.zip", env=env, device="cpu")
    assert type(loaded.policy) is FolderPolicy
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert loaded.reference_policy is not None and not loaded.reference_policy.training


class FolderPolicy(TransformerPolicy):
    """A TransformerPolicy whose checkpoint is a folder (as an HFPolicy's is)."""

    def save(self, path):
        path.mkdir()
        super().save(path / "weights.pt")

    @classmethod
    def load(cls, path, env=None, device="auto"):
        base = TransformerPolicy.load(path / "weights.pt", env=env, device=device)
        policy = cls(base.config, base.tokenizer, base.max_prompt_tokens, base.max_new_tokens, device="cpu")
        policy.load_state_dict(base.state_dict())
        return policy


def test_unknown_kinds_and_entry_points_are_clear_errors():
    from agents.policies.registry import load_policy, register_policy_kind

    with pytest.raises(ValueError, match="unknown policy kind 'nope'; registered: .*'hf'.*'transformer'"):
        load_policy("nope", "x")
    with pytest.raises(ValueError, match="entry_point must be 'module:ClassName'"):
        register_policy_kind("bad", "agents.policies.transformer.TransformerPolicy", "policy.pt")


def test_importing_agents_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, agents, agents.policies; assert 'transformers' not in sys.modules, 'imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
