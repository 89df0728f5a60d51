"""Offline RL: filtered behaviour cloning and ILQL, their data sets, and ILQL's Q-adjusted acting.

The maths against hand-computed values (expectile loss, TD targets, CQL term, Polyak update, top-x%
selection); data sets from references, saved rollouts and JSON Lines, with bad input; the SB3 surface
where offline learning differs from online (gradient steps, callbacks, checkpoints of the heads); and a slow
test that both algorithms beat behaviour cloning on data mixed from a weak policy and the references.
"""

import copy
import json
import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import lmrl_gym  # noqa: F401
from agents import TransformerPolicy, evaluate
from agents.algorithms.offline import (
    ILQL,
    FilteredBC,
    ILQLPolicy,
    cql_loss,
    expectile_loss,
    polyak_update,
    td_targets,
    top_fraction,
)
from agents.algorithms.offline.dataset import reference_trajectories
from agents.decoding import greedy_decode
from agents.rollout import Trajectories, collect_trajectories
from lmrl_gym.vector_env import TextGenVectorEnv

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}
TINY = {"policy_kwargs": {"n_layer": 1, "n_embd": 32}, "device": "cpu", "batch_size": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_env():
    return gym.make("TextGen-Copy-v0", **SMALL_COPY)


def small_trajectories(tokens, lengths, returns, prompts=None, pad_id=0, vocab_size=10):
    """Episodes ``tokens [N, T]`` paid ``returns [N]`` at their last step, prompts ``[N, 3]``."""
    tokens, lengths = torch.as_tensor(tokens), torch.as_tensor(lengths)
    n, t = tokens.shape
    rewards = torch.zeros(n, t)
    rewards[torch.arange(n), lengths - 1] = torch.as_tensor(returns, dtype=torch.float32)
    if prompts is None:
        prompts = torch.full((n, 3), 4)
    zeros = torch.zeros(n, t)
    return Trajectories.from_padded(
        tokens,
        lengths,
        zeros,
        zeros,
        rewards,
        pad_id=pad_id,
        prompts=torch.as_tensor(prompts),
        vocab_size=vocab_size,
    )


# ---------------------------------------------------------------------------------------------- the maths


def test_expectile_loss_by_hand():
    diff = torch.tensor([2.0, -2.0, 0.5, 0.0])
    # tau * d^2 above V, (1 - tau) * d^2 below it: 0.7 * 4, 0.3 * 4, 0.7 * 0.25, 0.
    assert torch.allclose(expectile_loss(diff, 0.7), torch.tensor([2.8, 1.2, 0.175, 0.0]))
    # tau = 0.5 is half the square: the mean's loss.
    assert torch.allclose(expectile_loss(diff, 0.5), 0.5 * diff.square())


def test_expectile_minimiser_is_the_expectile():
    """Minimising the mean loss over V gives the tau-expectile of the samples: above the mean for
    tau > 0.5 (here samples {0, 1}: the expectile solves 0.7 (1 - V) = 0.3 V, V = 0.7)."""
    q = torch.tensor([0.0, 1.0])
    v = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([v], lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        expectile_loss(q - v, 0.7).mean().backward()
        optimizer.step()
    assert v.item() == pytest.approx(0.7, abs=1e-4)


def test_td_targets_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.5, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # r_t + 0.9 V(s_{t+1}); an episode's last action has no next state; the position after row 1's end
    # (V = 9) is never a next state.
    expected = torch.tensor([[0.9 * 0.2, 0.9 * 0.3, 1.0], [0.9 * 0.5, 0.5, 0.0]])
    assert torch.allclose(td_targets(rewards, values, mask, 0.9), expected)


def test_cql_term_on_a_tiny_example():
    q = torch.tensor([[[1.0, 2.0, 3.0]]])  # [B=1, T=1, V=3]
    action = torch.tensor([[2]])
    none_invalid = torch.tensor([False, False, False])
    expected = math.log(math.e + math.e**2 + math.e**3) - 3.0  # 0.40760596...
    assert cql_loss(q, action, none_invalid).item() == pytest.approx(expected)
    # An id no policy may take is left out of the logsumexp.
    first_invalid = torch.tensor([True, False, False])
    assert cql_loss(q, action, first_invalid).item() == pytest.approx(math.log(math.e**2 + math.e**3) - 3.0)
    # Taking a low-valued action costs more: the term pushes the data's action up relative to the rest.
    assert cql_loss(q, torch.tensor([[0]]), none_invalid).item() == pytest.approx(expected + 2.0)


def test_polyak_update_by_hand():
    online, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        for p in online.parameters():
            p.fill_(1.0)
        for p in target.parameters():
            p.fill_(0.0)
    polyak_update(target, online, 0.1)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in target.parameters())
    polyak_update(target, online, 0.1)  # 0.9 * 0.1 + 0.1 * 1
    assert all(torch.allclose(p, torch.full_like(p, 0.19)) for p in target.parameters())


def test_top_fraction_keeps_ties_at_the_threshold():
    returns = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.3])
    # k = ceil(0.2 * 5) = 1: the best return is 0.9, and both episodes with it are kept.
    assert top_fraction(returns, 0.2).tolist() == [False, True, False, True, False]
    # k = 3: the threshold is the third best, 0.5.
    assert top_fraction(returns, 0.6).tolist() == [False, True, True, True, False]
    assert top_fraction(returns, 1.0).all()
    # 0.3 * 10 is 3.0000000000000004 in floating point: still exactly 3 episodes.
    assert int(top_fraction(torch.arange(10.0), 0.3).sum()) == 3
    # Never fewer than one.
    assert int(top_fraction(torch.arange(10.0), 0.01).sum()) == 1


@pytest.mark.parametrize("keep_fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_keep_fraction_outside_0_1_is_refused(keep_fraction):
    with pytest.raises(ValueError, match=r"keep_fraction must be in \(0, 1\]"):
        FilteredBC("TransformerPolicy", copy_env(), keep_fraction=keep_fraction, **TINY)


def test_filtered_bc_trains_on_the_top_fraction_only():
    tokens = [[4, 2], [5, 2], [6, 2], [7, 2]]
    data = small_trajectories(tokens, [2, 2, 2, 2], [0.2, 1.0, 0.5, 1.0])
    model = FilteredBC("TransformerPolicy", copy_env(), dataset=data, keep_fraction=0.25, seed=0, **TINY)
    kept = model.training_data()
    assert kept.tokens[:, 0].tolist() == [5, 7]  # both 1.0s (a tie at the threshold)
    everything = FilteredBC("TransformerPolicy", copy_env(), dataset=data, keep_fraction=1.0, **TINY)
    assert everything.training_data().num_episodes == 4


# ---------------------------------------------------------------------------------------------- data sets


def test_references_are_the_default_data_set_rewarded_by_the_env():
    env = copy_env()
    model = FilteredBC("TransformerPolicy", env, **TINY)
    data = model.dataset
    setup = env.unwrapped.setup
    assert data.num_episodes == len(setup.task.examples("train"))  # one reference each
    # Each reference (3 symbols) then eos; the env's BLEU pays 1 for a reference, at the last step.
    assert data.lengths.tolist() == [4] * data.num_episodes
    assert (data.tokens[:, 3] == setup.tokenizer.eos_id).all()
    assert torch.allclose(data.episode_returns(), torch.ones(data.num_episodes))
    example = setup.task.examples("train")[5]
    assert setup.tokenizer.decode(data.tokens[5].tolist()) == example.references[0]


def test_trajectories_save_and_load_exactly(tmp_path):
    env = copy_env()
    policy = TransformerPolicy.for_env(env, n_layer=1, n_embd=32, device="cpu")
    venv = TextGenVectorEnv(num_envs=6, output="torch", info_text=False, **SMALL_COPY, task="copy")
    venv.reset(seed=0)
    traj = collect_trajectories(policy, venv, torch.Generator().manual_seed(0))
    traj.save(tmp_path / "rollouts.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["rollouts.pt"]  # written atomically: no temp file left
    loaded = Trajectories.load(tmp_path / "rollouts.pt")
    for name, value in vars(traj).items():
        again = getattr(loaded, name)
        if isinstance(value, torch.Tensor):
            assert again.dtype == value.dtype and torch.equal(again, value), name
        else:
            assert again == value, name
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable trajectories file"):
        Trajectories.load(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no trajectories file"):
        Trajectories.load(tmp_path / "missing.pt")


def test_a_saved_rollout_file_and_the_object_give_the_same_training(tmp_path):
    data = small_trajectories([[4, 5, 6, 2], [5, 5, 2, 0]], [4, 3], [1.0, 0.3])
    data.save(tmp_path / "data.pt")
    runs = []
    for source in (data, tmp_path / "data.pt", str(tmp_path / "data.pt")):
        torch.manual_seed(0)
        model = ILQL("TransformerPolicy", copy_env(), dataset=source, seed=1, **TINY).learn(3)
        runs.append([p.detach().clone() for p in model.policy.parameters()])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))


def test_a_json_lines_file_is_encoded_as_the_env_encodes(tmp_path):
    lines = [
        {"prompt": "a b c", "text": "a b c", "reward": 1.0},
        {"prompt": "d e f", "text": "d d", "reward": 0.25},
        {"prompt": "a a a", "text": "a a a a a a", "reward": 0},  # longer than the env allows: cut
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    env = copy_env()
    tok = env.unwrapped.setup.tokenizer
    data = FilteredBC("TransformerPolicy", env, dataset=path, **TINY).dataset
    assert data.num_episodes == 3
    assert data.lengths.tolist() == [4, 3, 4]
    assert data.tokens[0].tolist() == tok.encode("a b c") + [tok.eos_id]
    assert data.tokens[1, :3].tolist() == tok.encode("d d") + [tok.eos_id]
    assert data.tokens[2].tolist() == tok.encode("a a a a")  # cut at max_new_tokens, no eos
    assert data.prompts[1].tolist() == tok.encode("d e f")
    assert torch.allclose(data.episode_returns(), torch.tensor([1.0, 0.25, 0.0]))
    assert data.rewards[1].tolist() == [0.0, 0.0, 0.25, 0.0]  # paid at the last step


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"prompt": "a b c", "text": "a b c", "reward": 1}\n{"prompt": "a", "text": "a"}\n',
            r"line 2 has no field 'reward'",
        ),
        (
            '{"text": "a b c", "reward": 1}\n',
            r"line 1 has no field 'prompt'.*prompt \(text\), text \(text\), reward \(number\)",
        ),
        ('{"prompt": "a", "text": 3, "reward": 1}\n', r"line 1: field 'text' must be a string, got int"),
        ('{"prompt": "a", "text": "a", "reward": "high"}\n', r"line 1: field 'reward' must be a number"),
        ('{"prompt": "a", "text": "a", "reward": NaN}\n', r"line 1: field 'reward' must be finite"),
        ('\n{"prompt": "a", "text": "a", \n', r"line 2 is not valid JSON"),
        ('["a", "b", 1]\n', r"line 1 is not a JSON object"),
        (
            '{"prompt": "a b c a", "text": "a", "reward": 1}\n',
            r"line 1: the prompt has 4 tokens.*max_prompt_tokens=3",
        ),
        (
            '{"prompt": "a", "text": "a zebra", "reward": 1}\n',
            r"line 1: field 'text' encodes to id 3, which a policy can never",
        ),
        ("\n\n", r"holds no trajectories"),
    ],
)
def test_bad_json_lines_name_the_line_and_field(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        FilteredBC("TransformerPolicy", copy_env(), dataset=path, **TINY)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: small_trajectories(
                torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long), []
            ),
            "holds no trajectories; give at least one episode",
        ),
        (
            lambda: small_trajectories([[4, 2], [5, 12]], [2, 2], [1.0, 0.0], vocab_size=None),
            r"holds action id 12 \(episode 1, step 1\), outside the policy's vocabulary: "
            r"action ids must be in \[0, 10\)",
        ),
        (
            lambda: small_trajectories([[4, 2], [-1, 2]], [2, 2], [1.0, 0.0], vocab_size=None),
            r"holds action id -1 \(episode 1, step 0\), outside the policy's vocabulary",
        ),
        (
            lambda: small_trajectories([[4, 1], [5, 2]], [2, 2], [1.0, 0.0]),
            r"holds action id 1 \(episode 0, step 1\), one the policy can never generate "
            r"\(its invalid ids \(0, 1, 3\)",
        ),
        (
            lambda: small_trajectories([[4, 2]], [2], [1.0], prompts=[[4, 99, 0]], vocab_size=None),
            r"holds prompt id 99 \(episode 0, position 1\), outside the policy's vocabulary: "
            r"prompt ids must be in \[0, 10\) or the pad id 0",
        ),
        (
            lambda: small_trajectories([[4, 5, 6, 7, 2]], [5], [1.0]),
            r"episode 0 has 5 actions; the policy's env allows at most max_new_tokens=4",
        ),
        (
            lambda: small_trajectories([[4, 2]], [2], [1.0], prompts=[[4, 4, 4, 4]]),
            r"prompts 4 tokens wide; the policy's env allows max_prompt_tokens=3",
        ),
        (lambda: small_trajectories([[4, 2]], [2], [float("inf")]), "rewards that are not finite"),
        (
            lambda: small_trajectories([[4, 2]], [2], [1.0], pad_id=7),
            "pads with id 7 but the policy's tokenizer pads with 0",
        ),
        (lambda: [[4, 2]], "dataset must be None .* got list"),
    ],
)
@pytest.mark.parametrize("cls", [FilteredBC, ILQL])
def test_bad_data_sets_say_what_is_wrong_and_what_is_allowed(cls, make, message):
    with pytest.raises(ValueError, match=message):
        cls("TransformerPolicy", copy_env(), dataset=make(), **TINY)


def test_a_json_lines_source_without_env_is_built_at_set_env(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a b c", "text": "a b c", "reward": 1}\n', encoding="utf-8")
    policy = TransformerPolicy.for_env(copy_env(), n_layer=1, n_embd=32, device="cpu")
    model = FilteredBC(policy, None, dataset=path, batch_size=8)
    with pytest.raises(RuntimeError, match="FilteredBC.dataset needs an environment"):
        model.dataset  # noqa: B018
    model.save(tmp_path / "model.zip")  # before the data set exists: its path is kept
    loaded = FilteredBC.load(tmp_path / "model.zip", device="cpu")
    loaded.set_env(copy_env())
    assert loaded.learn(2).dataset.num_episodes == 1


# ------------------------------------------------------------------------------------- the SB3 surface


@pytest.mark.parametrize("cls", [FilteredBC, ILQL])
def test_learn_counts_gradient_steps_and_calls_back_after_each(cls):
    class StopAfterFive(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 5

    model = cls("TransformerPolicy", copy_env(), seed=0, **TINY)
    first = next(p for p in model.policy.parameters() if p.requires_grad)
    model.learn(3)
    assert model.num_timesteps == 3 and model.optimizer.state[first]["step"].item() == 3
    callback = StopAfterFive()
    model.learn(100, callback=callback, reset_num_timesteps=False)
    assert callback.n_calls == 5 and model.num_timesteps == 8


@pytest.mark.parametrize("cls", [FilteredBC, ILQL])
def test_a_non_finite_loss_stops_with_the_quantity_and_gradient_step(cls):
    model = cls("TransformerPolicy", copy_env(), seed=0, **TINY).learn(2)
    with torch.no_grad():
        for parameter in model.policy.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"loss is not finite .* at update 3"):
        model.learn(1, reset_num_timesteps=False)


@pytest.mark.parametrize("cls", [FilteredBC, ILQL])
def test_updates_run_with_dropout_off_so_the_seed_alone_decides(cls):
    """The shared dropout test needs a rollout; offline, what matters is that updates do not draw from the
    global generator: with dropout 0.1 two runs from different global states are identical."""
    kwargs = TINY | {"policy_kwargs": {"n_layer": 1, "n_embd": 32, "dropout": 0.1}}
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(0)
        model = cls("TransformerPolicy", copy_env(), seed=3, **kwargs)
        model.policy.train()  # whatever mode a user left it in
        torch.manual_seed(global_seed)
        runs.append([p.detach().clone() for p in model.learn(4).policy.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("cls", [FilteredBC, ILQL])
def test_offline_algorithms_have_no_kl_leash(cls):
    with pytest.raises(ValueError, match="no KL leash"):
        cls("TransformerPolicy", copy_env(), kl_coef=0.1, **TINY)


def test_ilql_bad_arguments():
    for kwargs, message in (
        ({"tau": 1.0}, r"tau must be in \(0, 1\)"),
        ({"tau": 0.0}, r"tau must be in \(0, 1\)"),
        ({"polyak_alpha": 0.0}, r"polyak_alpha must be in \(0, 1\]"),
        ({"q_beta": -1.0}, "q_beta must be >= 0"),
        ({"cql_weight": -0.1}, "cql_weight must be >= 0"),
        ({"head_hidden": -1}, "head_hidden must be None or an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=message):
            ILQL("TransformerPolicy", copy_env(), **(TINY | kwargs))


def test_ilql_target_heads_follow_by_polyak_after_each_step():
    model = ILQL("TransformerPolicy", copy_env(), seed=0, polyak_alpha=0.25, **TINY)
    heads = model.policy.heads
    before = [p.detach().clone() for p in heads.target_q1.parameters()]
    model.learn(1)
    online = list(heads.q1.parameters())
    for old, new, now in zip(before, online, heads.target_q1.parameters(), strict=True):
        assert torch.allclose(now, 0.75 * old + 0.25 * new)
    assert not all(torch.equal(a, b) for a, b in zip(before, heads.target_q1.parameters(), strict=True))
    assert not any(p.requires_grad for p in heads.target_q1.parameters())


def test_ilql_checkpoint_keeps_heads_targets_optimizer_and_data(tmp_path):
    data = small_trajectories([[4, 5, 6, 2], [5, 5, 2, 0], [6, 2, 0, 0]], [4, 3, 2], [1.0, 0.3, 0.1])
    model = ILQL("TransformerPolicy", copy_env(), dataset=data, seed=2, **TINY).learn(4)
    model.save(tmp_path / "model.zip")
    loaded = ILQL.load(tmp_path / "model.zip", env=copy_env(), device="cpu")
    for key, value in model.policy.heads.state_dict().items():
        assert torch.equal(value, loaded.policy.heads.state_dict()[key]), key
    assert torch.equal(loaded.dataset.step_tokens, data.step_tokens)
    model.learn(3, reset_num_timesteps=False)
    loaded.learn(3, reset_num_timesteps=False)
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- acting with Q


def favour(model: ILQL, token: int, value: float = 5.0) -> None:
    """Make both target Q heads value ``token`` at ``value`` and every other id at 0."""
    with torch.no_grad():
        for head in (model.policy.heads.target_q1, model.policy.heads.target_q2):
            head[-1].bias.zero_()
            head[-1].bias[token] = value


def test_ilql_predicts_and_evaluates_with_the_q_adjusted_logits():
    env = copy_env()
    model = ILQL("TransformerPolicy", env, seed=0, q_beta=2.0, **TINY)
    favour(model, 7)
    obs, _ = env.reset(seed=0)
    assert model.predict(obs, deterministic=True)[0] == 7
    decoded = evaluate(model.policy, env, split="test", max_examples=4)
    assert decoded["mean_length"] == 4.0  # 7 at every step: never eos, cut at max_new_tokens
    model.q_beta = 0.0  # the behaviour-cloned LM alone
    base_action = model.policy.base({k: torch.as_tensor(v)[None] for k, v in obs.items()})[0].argmax(-1)
    assert model.predict(obs, deterministic=True)[0] == int(base_action)


def hf_policy(request, fixture, **env_kwargs):
    pytest.importorskip("transformers")
    from agents.policies.hf import HFPolicy

    folder = str(request.getfixturevalue(fixture))
    env = gym.make("TextGen-Copy-v0", tokenizer=folder, **SMALL_COPY, **env_kwargs)
    return HFPolicy.from_pretrained(folder, env=env, device="cpu"), env


@pytest.mark.parametrize("which", ["transformer", "hf-gpt2", "hf-t5"])
def test_decoding_reads_the_hidden_states_the_heads_were_trained_on(which, request):
    """The decode-time hidden state (read at the value head) equals the teacher-forced one, so the Q
    adjustment while acting is the one the losses trained: start, step and feed, and predict."""
    if which == "transformer":
        env = copy_env()
        policy = TransformerPolicy.for_env(env, n_layer=1, n_embd=32, device="cpu")
    else:
        policy, env = hf_policy(
            request,
            "hf_gpt2_dir" if which == "hf-gpt2" else "hf_t5_dir",
            **({"num_actions": 428} if which == "hf-t5" else {}),
        )
    model = ILQL(policy, env, seed=0, q_beta=1.5, **{k: v for k, v in TINY.items() if k != "policy_kwargs"})
    with torch.no_grad():  # heads that are not zero, so the adjustment shows
        for p in model.policy.heads.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    ilql = model.policy.eval()
    setup = env.unwrapped.setup
    prompts = torch.as_tensor(setup.data.prompts[:3], dtype=torch.long)
    lengths = ilql.prompt_lengths(prompts)
    data = model.dataset
    assert (data.lengths[:3] >= 3).all()
    tokens = data.tokens[:3, :3].long()
    with torch.no_grad():
        logits, state = ilql.start(prompts, lengths)
        adjusted = [logits]
        base_logits, base_state = ilql.base.start(prompts, lengths)
        base = [base_logits]
        logits, state = ilql.step(state, tokens[:, 0])
        base_logits, base_state = ilql.base.step(base_state, tokens[:, 0])
        adjusted.append(logits), base.append(base_logits)
        logits, state = ilql.feed(state, tokens[:, 1:3], torch.tensor([2, 2, 2]))
        base_logits, base_state = ilql.base.feed(base_state, tokens[:, 1:3], torch.tensor([2, 2, 2]))
        adjusted.append(logits), base.append(base_logits)
        hidden = ilql.base.hidden_states(
            prompts, torch.cat([tokens, tokens[:, :1]], 1), torch.full((3,), 4), lengths
        )
    expected = [b + 1.5 * ilql.heads.target_q(hidden[:, t]) for t, b in zip((0, 1, 3), base, strict=True)]
    for got, want in zip(adjusted, expected, strict=True):
        finite = torch.isfinite(want)
        assert torch.equal(finite, torch.isfinite(got))
        assert torch.allclose(got[finite], want[finite], atol=1e-4)
    obs = {
        "prompt_ids": prompts,
        "prefix_ids": torch.cat(
            [tokens[:, :1], torch.full((3, setup.max_new_tokens - 1), setup.tokenizer.pad_id)], 1
        ),
    }
    with torch.no_grad():
        forward_logits, _ = ilql(obs)
    finite = torch.isfinite(forward_logits)
    assert torch.allclose(forward_logits[finite], adjusted[1][finite], atol=1e-4)
    # Whole episodes are scored under the same adjusted distribution (what evaluate_sequences reports).
    with torch.no_grad():
        whole, _ = ilql.sequence_logits(
            prompts, torch.cat([tokens, tokens[:, :1]], 1), torch.full((3,), 4), lengths
        )
        scores = ilql.evaluate_sequences(prompts, tokens, torch.full((3,), 3), lengths)
    for t, got in zip((0, 1, 3), adjusted, strict=True):
        finite = torch.isfinite(got)
        assert torch.allclose(whole[:, t][finite], got[finite], atol=1e-4)
    for t in (0, 1):
        expected = torch.log_softmax(adjusted[t], -1).gather(1, tokens[:, t : t + 1]).squeeze(1)
        assert torch.allclose(scores.log_probs[:, t], expected, atol=1e-4)


def test_the_ilql_policy_saves_loads_and_decodes_alone(tmp_path):
    env = copy_env()
    model = ILQL("TransformerPolicy", env, seed=0, q_beta=3.0, **TINY).learn(5)
    model.policy.save(tmp_path / "ilql")
    loaded = ILQLPolicy.load(tmp_path / "ilql", env=env, device="cpu")
    assert loaded.q_beta == 3.0
    prompts = torch.as_tensor(env.unwrapped.setup.data.prompts[:8], dtype=torch.long)
    common = {"max_new_tokens": 4, "eos_id": 2, "pad_id": 0, "invalid_ids": (0, 1, 3)}
    with torch.no_grad():
        ours = greedy_decode(model.policy.eval(), prompts, model.policy.prompt_lengths(prompts), **common)
        theirs = greedy_decode(loaded.eval(), prompts, loaded.prompt_lengths(prompts), **common)
    assert torch.equal(ours.tokens, theirs.tokens)


# ---------------------------------------------------------------------------------------------- learning


def weak_rollouts(env, seed: int, episodes: int = 512) -> Trajectories:
    """Rollouts on the train split of a weak policy that is confidently wrong: a fresh transformer with its
    (tied) embedding and output weights scaled by 5, i.e. sampled at a low temperature. Its mistakes are
    systematic, so cloning them along with the references copies them."""
    torch.manual_seed(1000 + seed)
    weak = TransformerPolicy.for_env(env, n_layer=1, n_embd=32, device="cpu")
    with torch.no_grad():
        weak.model.lm_head.weight.mul_(5.0)
    venv = TextGenVectorEnv(num_envs=episodes, output="torch", info_text=False, **env.unwrapped.setup.kwargs)
    venv.reset(seed=seed)
    return collect_trajectories(weak, venv, torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_filtered_bc_and_ilql_beat_behaviour_cloning_on_weak_rollouts_mixed_with_references():
    """Data: 512 rollouts of a weak policy (mean return ~0.1) and the 173 training references (return 1);
    the same data, start weights and steps for the three. Behaviour cloning = FilteredBC(keep_fraction=1).

    Measured (`pytest -s -m slow`, one thread, 300 gradient steps of 128 episodes, ~23 s in all), mean test
    reward for seeds 0 / 1 / 2: BC 0.369 / 0.409 / 0.309; FilteredBC(keep_fraction=0.3) 0.979 / 0.946 /
    0.913; ILQL(q_beta=16) 0.744 / 0.761 / 0.796.
    """
    env = copy_env()
    references = reference_trajectories(env.unwrapped.setup, 10)
    settings = {
        "bc": (FilteredBC, {"keep_fraction": 1.0}),
        "filtered_bc": (FilteredBC, {"keep_fraction": 0.3}),
        "ilql": (ILQL, {"q_beta": 16.0, "polyak_alpha": 0.05}),
    }
    started = time.perf_counter()
    results = {name: [] for name in settings}
    for seed in (0, 1, 2):
        data = Trajectories.concatenate([weak_rollouts(env, seed), references])
        torch.manual_seed(seed)
        start = TransformerPolicy.for_env(env, n_layer=1, n_embd=32, device="cpu")
        for name, (cls, kwargs) in settings.items():
            model = cls(
                copy.deepcopy(start), env, dataset=data, seed=seed, batch_size=128, device="cpu", **kwargs
            )
            model.learn(300)
            results[name].append(evaluate(model.policy, env, split="test")["mean_reward"])
    seconds = time.perf_counter() - started
    print({name: [round(r, 3) for r in rewards] for name, rewards in results.items()}, f"{seconds:.0f} s")
    bc = np.array(results["bc"])
    for name in ("filtered_bc", "ilql"):
        assert (np.array(results[name]) >= bc + 0.05).all(), results
