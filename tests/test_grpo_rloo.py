"""GRPO and RLOO: hand-computed advantages, loss normalisers and KL; RLOO against leave-one-out REINFORCE;
grouped prompts, minibatches, the value head left alone, checkpoints, and clear errors for bad input.

The SB3-surface tests (round trip, exact resume, same seed twice, ...) run over every algorithm in
``tests/test_algorithms.py``; the learning test (small copy from scratch) too, with the settings there.
"""

import json
import math
import zipfile

import gymnasium as gym
import pytest
import torch

import lmrl_gym  # noqa: F401
from agents.algorithms.advantages import group_relative_advantages, leave_one_out_baseline
from agents.algorithms.grpo import GRPO, aggregate_token_losses, clipped_surrogate, k3_kl
from agents.algorithms.reinforce import REINFORCE
from agents.algorithms.rloo import RLOO

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}
TINY = {"policy_kwargs": {"n_layer": 1, "n_embd": 32}, "n_envs": 8, "device": "cpu"}

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_env():
    return gym.make("TextGen-Copy-v0", **SMALL_COPY)


def capture_gradient_steps(model, monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record each optimizer step's objective and checked quantities (then step as usual)."""
    steps: list[dict[str, torch.Tensor]] = []
    original = model._gradient_step

    def spy(objective, **checks):
        steps.append({"objective": objective.detach(), **{k: v.detach() for k, v in checks.items()}})
        return original(objective, **checks)

    monkeypatch.setattr(model, "_gradient_step", spy)
    return steps


# ---------------------------------------------------------------------------------- hand-computed pieces

# Two groups of three samples: rewards (1, 0, 0) and (2, 2, 2).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0], dtype=torch.float64)
CENTRED = [2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0]  # minus each group's mean (1/3, then 2)


@pytest.mark.parametrize(
    ("scale_rewards", "expected"),
    [
        # Group 1's unbiased std: sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3); group 2's is 0 (A = 0 / 1e-4).
        ("group", [a / (math.sqrt(1 / 3) + 1e-4) for a in CENTRED[:3]] + [0.0, 0.0, 0.0]),
        # The rollout's: mean 7/6, squared deviations 1/36 + 2 * 49/36 + 3 * 25/36 = 174/36, over 5.
        ("batch", [a / (math.sqrt(174 / 36 / 5) + 1e-4) for a in CENTRED]),
        ("none", CENTRED),
    ],
)
def test_grpo_advantages_for_each_scale_rewards(scale_rewards, expected):
    advantages = group_relative_advantages(REWARDS, 3, scale_rewards)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_leave_one_out_baseline_is_the_mean_of_the_others():
    torch.testing.assert_close(
        leave_one_out_baseline(REWARDS, 3), torch.tensor([0.0, 0.5, 0.5, 2.0, 2.0, 2.0], dtype=torch.float64)
    )


# A ragged minibatch: episodes of 3 and 1 tokens (the 99s are beyond the second episode's end).
LOSSES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", (6 / 3 + 4 / 1) / 2),  # each sequence's token mean, then the mean over sequences
        ("bnpo", 10 / 4),  # the token mean over the minibatch
        ("dr_grpo", 10 / (2 * 5)),  # over sequences x max_new_tokens (5)
        ("dapo", 10 / 8),  # over the whole rollout's tokens (8: this minibatch is half of it)
    ],
)
def test_each_loss_type_normalises_a_ragged_batch_as_trl_does(loss_type, expected):
    value = aggregate_token_losses(
        LOSSES, MASK, loss_type, max_new_tokens=5, rollout_tokens=torch.tensor(8.0)
    )
    assert value.item() == pytest.approx(expected)


def test_k3_kl_by_hand():
    log_probs = torch.log(torch.tensor([0.5, 0.25, 0.3]))
    ref_log_probs = torch.log(torch.tensor([0.25, 0.5, 0.3]))
    # d = log(ref / p): log 0.5 -> 0.5 + log 2 - 1; log 2 -> 2 - log 2 - 1; 0 -> 0.
    expected = torch.tensor([math.log(2) - 0.5, 1 - math.log(2), 0.0])
    torch.testing.assert_close(k3_kl(log_probs, ref_log_probs), expected)


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([0.5, 1.5, 0.5, 1.1])
    advantages = torch.tensor([1.0, 1.0, -1.0, 2.0])
    loss, clipped = clipped_surrogate(ratio, advantages, epsilon=0.2, epsilon_high=0.28)
    # min(0.5, 0.8) A=1: unclipped term; min(1.5, 1.28): clipped above; min(-0.5, -0.8): clipped below;
    # 1.1 is inside [0.8, 1.28].
    torch.testing.assert_close(loss, torch.tensor([-0.5, -1.28, 0.8, -2.2]))
    assert clipped.tolist() == [False, True, True, False]


# ---------------------------------------------------------------------------------- GRPO's update


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_first_loss_is_the_hand_normalised_advantage_sum(loss_type, monkeypatch):
    """Before any step the ratio is 1, so each token's loss is -A_i of its sequence: the objective is
    ``-sum_i A_i n_i`` over the loss type's normaliser (n_i: sequence i's tokens, ragged)."""
    model = GRPO("TransformerPolicy", copy_env(), seed=1, num_generations=4, loss_type=loss_type, **TINY)
    steps = capture_gradient_steps(model, monkeypatch)
    traj = model.collect_rollout()
    model.train(traj)
    lengths = traj.lengths.double()
    advantages = group_relative_advantages(traj.episode_returns().double(), 4, "group")
    assert len(set(lengths.tolist())) > 1 and advantages.abs().sum() > 0  # ragged, with a signal
    weighted = (advantages * lengths).sum()
    expected = {
        "grpo": -advantages.mean(),
        "bnpo": -weighted / lengths.sum(),
        "dr_grpo": -weighted / (8 * model.env.setup.max_new_tokens),
        "dapo": -weighted / lengths.sum(),
    }[loss_type]
    assert len(steps) == 1
    assert steps[0]["policy_loss"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_dapo_divides_every_minibatch_by_the_whole_rollouts_tokens(monkeypatch):
    model = GRPO("TransformerPolicy", copy_env(), seed=1, num_generations=4, batch_size=4, **TINY)
    steps = capture_gradient_steps(model, monkeypatch)
    minibatches = []
    evaluate_episodes = model.evaluate_episodes

    def spy(batch, rows, *args, **kwargs):
        minibatches.append(rows.clone())
        return evaluate_episodes(batch, rows, *args, **kwargs)

    monkeypatch.setattr(model, "evaluate_episodes", spy)
    traj = model.collect_rollout()
    model.train(traj)
    assert len(steps) == 2 and sorted(torch.cat(minibatches).tolist()) == list(range(8))
    lengths = traj.lengths.double()
    advantages = group_relative_advantages(traj.episode_returns().double(), 4, "group")
    first = minibatches[0]  # scored before any step: ratio 1
    expected = -(advantages[first] * lengths[first]).sum() / lengths.sum()
    assert steps[0]["policy_loss"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_grpo_kl_term_is_k3_to_the_reference_weighted_by_beta(monkeypatch):
    model = GRPO("TransformerPolicy", copy_env(), seed=2, num_generations=4, beta=0.5, **TINY)
    model.learn(64)  # the policy moves away from its reference (frozen when learn started)
    steps = capture_gradient_steps(model, monkeypatch)
    traj = model.collect_rollout()
    batch = traj.unpack()
    with torch.no_grad():
        policy_log_probs = model.evaluate_rollout(batch).log_probs
        reference_log_probs = model.evaluate_rollout(batch, model.reference_policy).log_probs
    mask = batch.mask.float()
    expected = (k3_kl(policy_log_probs, reference_log_probs) * mask).sum() / mask.sum()  # dapo, one batch
    stats = model.train(traj)
    assert expected > 0
    assert steps[0]["kl"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert steps[0]["loss"].item() == pytest.approx((steps[0]["policy_loss"] + 0.5 * steps[0]["kl"]).item())
    assert stats["kl"] == pytest.approx(expected.item(), rel=1e-4)


def test_grpo_without_beta_makes_and_scores_no_reference(monkeypatch):
    model = GRPO("TransformerPolicy", copy_env(), seed=0, num_generations=4, **TINY)
    calls = []
    evaluate_rollout = model.evaluate_rollout
    monkeypatch.setattr(
        model, "evaluate_rollout", lambda *a, **k: calls.append(a) or evaluate_rollout(*a, **k)
    )
    model.learn(64)
    assert model.reference_policy is None and calls == []


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (GRPO, {"beta": 0.1, "num_iterations": 2, "batch_size": 4}),
        (RLOO, {"kl_coef": 0.1, "num_iterations": 2}),
    ],
)
def test_the_value_head_gets_no_gradient(cls, kwargs):
    model = cls("TransformerPolicy", copy_env(), seed=0, vf_coef=123.0, **TINY, **kwargs)
    before = {k: v.clone() for k, v in model.policy.named_parameters()}
    model.learn(64)
    after = dict(model.policy.named_parameters())
    value_head = [k for k in before if "value_head" in k]
    assert value_head and all(torch.equal(before[k], after[k]) for k in value_head)
    assert all(after[k].grad is None for k in value_head)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in value_head)


@pytest.mark.parametrize(("num_iterations", "batch_size", "steps"), [(1, None, 1), (2, None, 2), (3, 3, 9)])
def test_iterations_and_minibatches_set_the_optimizer_steps(num_iterations, batch_size, steps):
    """``num_iterations`` passes over the rollout, each in ceil(8 / batch_size) minibatches."""
    model = GRPO(
        "TransformerPolicy",
        copy_env(),
        seed=0,
        num_generations=4,
        num_iterations=num_iterations,
        batch_size=batch_size,
        **TINY,
    )
    model.train(model.collect_rollout())
    first = next(model.policy.parameters())
    assert model.optimizer.state[first]["step"].item() == steps


@pytest.mark.parametrize("cls", [GRPO, RLOO])
def test_each_rollout_plays_each_drawn_prompt_num_generations_times(cls):
    model = cls("TransformerPolicy", copy_env(), seed=0, num_generations=4, **TINY)
    rows = model.collect_rollout().example_index.long().view(-1, 4)
    assert (rows == rows[:, :1]).all() and rows[:, 0].unique().numel() == 2
    # The same draws as leave-one-out REINFORCE's (one shared grouping).
    loo = REINFORCE(
        "TransformerPolicy", copy_env(), seed=0, baseline="leave_one_out", num_generations=4, **TINY
    )
    assert torch.equal(loo.collect_rollout().example_index.long().view(-1, 4), rows)


# ---------------------------------------------------------------------------------- RLOO == REINFORCE


ROLLOUT_FIELDS = (
    "example_index",
    "step_lengths",
    "step_tokens",
    "step_log_probs",
    "step_values",
    "step_rewards",
)


def rloo_and_reinforce(loss_normalizer="sequences", **kwargs):
    """The same policy weights, env, seed and settings (``loss_normalizer``: RLOO's)."""
    torch.manual_seed(0)
    rloo = RLOO(
        "TransformerPolicy",
        copy_env(),
        seed=5,
        num_generations=4,
        loss_normalizer=loss_normalizer,
        **TINY,
        **kwargs,
    )
    reinforce = REINFORCE(
        "TransformerPolicy", copy_env(), seed=5, baseline="leave_one_out", num_generations=4, **TINY, **kwargs
    )
    reinforce.policy.load_state_dict(rloo.policy.state_dict())
    return rloo, reinforce


def record_gradients(models, monkeypatch) -> dict[str, list[torch.Tensor | None]]:
    """Each model's gradients as its optimizer steps (after the norm clip), then the step as usual."""
    gradients: dict[str, list[torch.Tensor | None]] = {}
    for name, model in models.items():
        step = model.optimizer.step

        def spy(name=name, model=model, step=step):
            gradients[name] = [None if p.grad is None else p.grad.clone() for p in model.policy.parameters()]
            return step()

        monkeypatch.setattr(model.optimizer, "step", spy)
    return gradients


def same_rollout(rloo, reinforce):
    traj, same = rloo.collect_rollout(), reinforce.collect_rollout()
    for field in ROLLOUT_FIELDS:
        assert torch.equal(getattr(traj, field), getattr(same, field)), field
    return traj, same


def test_rloo_gradient_is_leave_one_out_reinforces_times_tokens_per_sequence(monkeypatch):
    """The default normaliser (TRL's): one iteration, one minibatch, no KL: the same episodes and
    advantages, ratio 1; RLOO averages over sequences and REINFORCE over tokens, so the gradients differ by
    exactly tokens / sequences (up to the rounding of that product)."""
    rloo, reinforce = rloo_and_reinforce(max_grad_norm=1e9)  # no clipping of the gradient norm
    gradients = record_gradients({"rloo": rloo, "reinforce": reinforce}, monkeypatch)
    traj, same = same_rollout(rloo, reinforce)
    rloo.train(traj)
    reinforce.train(same)
    factor = traj.num_steps / traj.num_episodes
    assert factor != 1
    compared = 0
    for a, b in zip(gradients["rloo"], gradients["reinforce"], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b * factor, rtol=1e-4, atol=1e-7)
            compared += int(b.abs().sum() > 0)
    assert compared > 0


@pytest.mark.parametrize(("loss_normalizer", "same_step"), [("tokens", True), ("sequences", False)])
def test_rloo_over_tokens_takes_leave_one_out_reinforces_step_bit_for_bit(
    loss_normalizer, same_step, monkeypatch
):
    """Where the settings coincide (``loss_normalizer="tokens"``; num_iterations 1, one minibatch, gamma 1,
    kl_coef 0, the same ent_coef, max_grad_norm and learning rate) RLOO's update is REINFORCE's with the
    leave-one-out baseline: the same rollout, then the same gradients and parameters, to the bit, after
    one ``train``. Exact because each side's per-token gradient is ``-A_i / tokens`` computed from the
    same numbers (RLOO's pi_old is its own pass, detached: ratio exactly 1) and the network's backward and
    AdamW's step then see identical inputs. With TRL's ``"sequences"`` it fails (the gradient is
    tokens / sequences times REINFORCE's, see the test above), so this test can fail."""
    rloo, reinforce = rloo_and_reinforce(
        loss_normalizer=loss_normalizer, ent_coef=0.01, max_grad_norm=1.0, learning_rate=1e-3
    )
    gradients = record_gradients({"rloo": rloo, "reinforce": reinforce}, monkeypatch)
    traj, same = same_rollout(rloo, reinforce)
    assert len(set(traj.lengths.tolist())) > 1  # ragged: tokens / sequences != 1
    assert traj.episode_returns().abs().sum() > 0  # a signal
    before = [p.clone() for p in rloo.policy.parameters()]
    rloo.train(traj)
    reinforce.train(same)
    grads = list(zip(gradients["rloo"], gradients["reinforce"], strict=True))
    assert all((a is None) == (b is None) for a, b in grads)
    pairs = [(a, b) for a, b in grads if a is not None]
    assert any(not torch.equal(p, q) for p, q in zip(before, rloo.policy.parameters(), strict=True))
    after = list(zip(rloo.policy.parameters(), reinforce.policy.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs) == same_step
    assert all(torch.equal(p, q) for p, q in after) == same_step


# ---------------------------------------------------------------------------------- checkpoints


def test_grpo_hyperparameters_survive_a_checkpoint(tmp_path):
    settings = {
        "num_generations": 2,
        "beta": 0.02,
        "loss_type": "dr_grpo",
        "scale_rewards": "batch",
        "num_iterations": 2,
        "epsilon": 0.1,
        "epsilon_high": 0.28,
        "batch_size": 3,
    }
    model = GRPO("TransformerPolicy", copy_env(), seed=0, **TINY, **settings).learn(16)
    model.save(tmp_path / "grpo.zip")
    loaded = GRPO.load(tmp_path / "grpo.zip", env=copy_env(), device="cpu")
    assert {k: getattr(loaded, k) for k in settings} == settings
    assert loaded.kl.coef == 0 and loaded.reference_policy is not None


def test_rloo_hyperparameters_survive_a_checkpoint(tmp_path):
    settings = {
        "num_generations": 4,
        "normalize_advantages": True,
        "num_iterations": 2,
        "epsilon_high": 0.3,
        "loss_normalizer": "tokens",
    }
    model = RLOO("TransformerPolicy", copy_env(), seed=0, kl_coef=0.05, **TINY, **settings).learn(16)
    model.save(tmp_path / "rloo.zip")
    loaded = RLOO.load(tmp_path / "rloo.zip", env=copy_env(), device="cpu")
    assert {k: getattr(loaded, k) for k in settings} == settings
    assert loaded.kl.coef == 0.05


def test_reinforce_checkpoints_that_say_samples_per_prompt_still_load(tmp_path):
    """Written before the rename: ``samples_per_prompt`` in the arguments. It loads as ``num_generations``
    and continues exactly as the same checkpoint with the new name."""
    model = REINFORCE(
        "TransformerPolicy", copy_env(), seed=0, baseline="leave_one_out", num_generations=2, **TINY
    )
    model.learn(16)
    model.save(tmp_path / "new.zip")
    with zipfile.ZipFile(tmp_path / "new.zip") as new, zipfile.ZipFile(tmp_path / "old.zip", "w") as old:
        for item in new.infolist():
            data = new.read(item)
            if item.filename == "algorithm.json":
                meta = json.loads(data)
                meta["arguments"]["samples_per_prompt"] = meta["arguments"].pop("num_generations")
                data = json.dumps(meta).encode()
            old.writestr(item, data)
    old_model = REINFORCE.load(tmp_path / "old.zip", env=copy_env(), device="cpu")
    assert old_model.num_generations == old_model.samples_per_prompt == 2
    new_model = REINFORCE.load(tmp_path / "new.zip", env=copy_env(), device="cpu")
    old_model.learn(16, reset_num_timesteps=False)
    new_model.learn(16, reset_num_timesteps=False)
    for a, b in zip(old_model.policy.parameters(), new_model.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (
        "samples_per_prompt"
        not in json.loads(zipfile.ZipFile(tmp_path / "new.zip").read("algorithm.json"))["arguments"]
    )


def test_reinforce_takes_samples_per_prompt_as_num_generations():
    model = REINFORCE("TransformerPolicy", copy_env(), baseline="leave_one_out", samples_per_prompt=2, **TINY)
    assert model.num_generations == 2


# ---------------------------------------------------------------------------------- bad input


def make(cls, **kwargs):
    return lambda: cls("TransformerPolicy", copy_env(), **{**TINY, **kwargs})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            make(GRPO, num_generations=3),
            r"num_generations \(3\) must divide n_envs \(8\).*one of \[2, 4, 8\]",
        ),
        (make(RLOO, num_generations=4, n_envs=10), r"num_generations \(4\) must divide.*one of \[2, 5, 10\]"),
        (make(GRPO, num_generations=1), r"num_generations must be an integer >= 2.*got 1"),
        (make(RLOO, num_generations=1), r"num_generations must be an integer >= 2"),
        (
            make(REINFORCE, baseline="leave_one_out", num_generations=3),
            r"num_generations \(3\) must divide n_envs \(8\)",
        ),
        (
            make(REINFORCE, num_generations=2, samples_per_prompt=4),
            "name the same setting .*give only num_generations",
        ),
        (
            make(GRPO, loss_type="token_mean"),
            r"unknown loss_type 'token_mean'; valid: \['grpo', 'bnpo', 'dr_grpo', 'dapo'\]",
        ),
        (make(GRPO, scale_rewards=True), r"unknown scale_rewards True; valid: \['group', 'batch', 'none'\]"),
        (make(GRPO, kl_coef=0.1), r"GRPO puts its KL .* beta=.*got kl_coef=0.1.*use beta= instead"),
        (make(GRPO, target_kl_penalty=0.5), r"target_kl_penalty=0.5"),
        (make(GRPO, beta=-0.1), r"beta must be >= 0"),
        (make(GRPO, epsilon=1.5), r"epsilon must be in \(0, 1\).*got 1.5"),
        (make(RLOO, epsilon=0.0), r"epsilon must be in \(0, 1\).*got 0.0"),
        (make(GRPO, epsilon_high=-0.2), r"epsilon_high must be > 0.*got -0.2"),
        (make(GRPO, num_iterations=0), r"num_iterations must be an integer >= 1, got 0"),
        (make(RLOO, batch_size=0), r"batch_size must be an integer >= 1 .* or None"),
        (
            make(RLOO, loss_normalizer="token_mean"),
            r"unknown loss_normalizer 'token_mean'; valid: \['sequences', 'tokens'\]",
        ),
    ],
)
def test_bad_arguments_say_what_is_wrong_and_what_is_allowed(build, message):
    with pytest.raises(ValueError, match=message):
        build()
