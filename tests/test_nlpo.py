"""NLPO: the top-p mask by hand, the rollout hook, the update's mask equal to the sampling one, the refresh
schedule, masking during learning, checkpoints and bad input.

The SB3-surface tests (round trip, exact resume, same seed twice, load without env, ...) run NLPO over
every policy in ``test_algorithms.py``; its learning test solves the small copy task there (slow).
"""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from stable_baselines3.common.logger import KVWriter, Logger

import lmrl_gym  # noqa: F401
from agents.algorithms.nlpo import NLPO, TopPMask, keep_top, ranks, top_p_counts
from agents.policies.base import score_actions
from agents.rollout import collect_trajectories
from lmrl_gym.vector_env import TextGenVectorEnv

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}
TINY = {"policy_kwargs": {"n_layer": 1, "n_embd": 32}, "n_envs": 8, "device": "cpu"}

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_env():
    return gym.make("TextGen-Copy-v0", **SMALL_COPY)


def parameters(policy):
    return [p.detach().clone() for p in policy.parameters()]


def same_weights(a, b) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# ------------------------------------------------------------------ the top-p set by hand


def log_of(*probs: float) -> torch.Tensor:
    return torch.tensor([math.log(p) if p > 0 else float("-inf") for p in probs])


@pytest.mark.parametrize(
    ("top_mask", "min_keep", "expected"),
    [
        # Ranked: id 1 (0.5), id 2 (0.3), id 3 (0.15), id 0 (0.05); mass before each rank 0, .5, .8, .95.
        (0.9, 1, [1, 2, 3]),  # .8 < .9 keeps rank 2; .95 is not < .9
        (0.6, 1, [1, 2]),
        (0.4, 1, [1]),
        (1.0, 1, [0, 1, 2, 3]),  # 1 keeps every id: no masking
        (0.4, 3, [1, 2, 3]),  # min_tokens_to_keep widens the set by rank
    ],
)
def test_the_mask_is_the_top_p_set(top_mask, min_keep, expected):
    logits = log_of(0.05, 0.5, 0.3, 0.15)
    counts = top_p_counts(logits, top_mask, min_keep)
    assert counts.item() == len(expected)
    assert keep_top(logits, counts).nonzero().squeeze(1).tolist() == expected


def test_ties_are_kept_by_id_and_ids_never_takeable_are_never_kept():
    # Three equal logits: the top-p set needs two of them (mass before: 0, .296, .591 against .5); the
    # smaller ids win, whatever the tie's position in the vocabulary.
    assert keep_top(torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor(2)).tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert top_p_counts(torch.tensor([1.0, 1.0, 1.0, 0.0]), 0.5, 1).item() == 2
    assert keep_top(torch.tensor([0.0, 1.0, 1.0, 1.0]), torch.tensor(2)).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert ranks(torch.tensor([0.0, 1.0, 1.0, 1.0])).tolist() == [3, 0, 1, 2]
    # -inf ids (pad, bos, ...) have probability 0: min_tokens_to_keep cannot pull them in.
    invalid = log_of(0.0, 0.7, 0.0, 0.3)
    assert top_p_counts(invalid, 1.0, 1).item() == 2
    assert top_p_counts(invalid, 0.5, 4).item() == 2
    assert keep_top(invalid, top_p_counts(invalid, 0.5, 4)).tolist() == [False, True, False, True]


def test_counts_and_masks_are_batched_over_any_leading_shape():
    rows = torch.stack(
        [log_of(0.05, 0.5, 0.3, 0.15), log_of(0.7, 0.1, 0.1, 0.1), log_of(0.25, 0.25, 0.25, 0.25)]
    )
    logits = torch.stack([rows, rows.flip(0)])  # [2, 3, 4]
    counts = top_p_counts(logits, 0.75, 1)
    assert counts.tolist() == [[2, 2, 3], [3, 2, 2]]
    assert keep_top(logits, counts).sum(-1).tolist() == counts.tolist()


# ------------------------------------------------------------------ the rollout hook


class Identity:
    """A logits processor that changes nothing and records 7 at every step."""

    def __init__(self) -> None:
        self.calls = {"start": 0, "process": 0, "select": 0, "step": 0}

    def start(self, prompt_ids):
        self.calls["start"] += 1

    def process(self, logits):
        self.calls["process"] += 1
        return logits, torch.full(logits.shape[:1], 7, dtype=torch.uint8)

    def select(self, rows):
        self.calls["select"] += 1

    def step(self, tokens):
        self.calls["step"] += 1


def scan_setup(seed=0):
    torch.manual_seed(seed)
    from agents import TransformerPolicy

    policy = TransformerPolicy.for_env("TextGen-SCAN-v0", n_layer=1, n_embd=32, device="cpu")
    env_kwargs = {"task": "scan", "output": "torch", "info_text": False}
    return policy, TextGenVectorEnv(num_envs=16, **env_kwargs), TextGenVectorEnv(num_envs=16, **env_kwargs)


def test_a_processor_that_changes_nothing_changes_no_sample_and_is_stored_packed():
    policy, plain, hooked = scan_setup()
    plain.reset(seed=3)
    hooked.reset(seed=3)
    processor = Identity()
    without = collect_trajectories(policy, plain, torch.Generator().manual_seed(1))
    with_hook = collect_trajectories(
        policy, hooked, torch.Generator().manual_seed(1), logits_processor=processor
    )
    assert without.step_extra is None and without.extra is None
    for name in ("tokens", "lengths", "log_probs", "values", "rewards"):
        assert torch.equal(getattr(without, name), getattr(with_hook, name)), name
    assert processor.calls["start"] == 1 and processor.calls["select"] >= 1  # rows were dropped on the way
    assert processor.calls["process"] == processor.calls["step"] + 1
    assert with_hook.step_extra.dtype == torch.uint8 and with_hook.step_extra.shape == (with_hook.num_steps,)
    assert torch.equal(with_hook.extra, 7 * with_hook.mask.to(torch.uint8))
    assert with_hook.nbytes == without.nbytes + with_hook.num_steps  # one byte per step
    rows = torch.tensor([3, 0])
    assert torch.equal(with_hook.index(rows).extra, with_hook.extra[rows, : with_hook.index(rows).width])
    assert torch.equal(with_hook.unpack().extra, with_hook.extra)


class Recording(TopPMask):
    """TopPMask that also writes down the ids each step could sample, per episode: ``allowed [N, T, V]``."""

    def start(self, prompt_ids):
        super().start(prompt_ids)
        n = prompt_ids.shape[0]
        self.live = torch.arange(n)
        self.t = 0
        self.allowed = torch.zeros(n, 64, self.policy.vocab_size, dtype=torch.bool)
        self.selects = 0

    def process(self, logits):
        masked, record = super().process(logits)
        self.allowed[self.live, self.t] = torch.isfinite(masked)
        return masked, record

    def select(self, rows):
        super().select(rows)
        self.live = self.live[rows]
        self.selects += 1

    def step(self, tokens):
        super().step(tokens)
        self.t += 1


def nlpo_case(kind: str, request, **kwargs):
    """An NLPO model whose masking policy is not the policy (the policy's weights were moved after it was
    frozen), with masking strongly active (``top_mask`` 0.5)."""
    if kind == "transformer":
        torch.manual_seed(0)
        env = kwargs.pop("env", None) or copy_env()
        model = NLPO("TransformerPolicy", env, seed=0, top_mask=0.5, **TINY, **kwargs)
    else:
        pytest.importorskip("transformers")
        from agents.policies.hf import HFPolicy

        folder = str(request.getfixturevalue("hf_gpt2_dir"))
        env = gym.make("TextGen-Copy-v0", tokenizer=folder, **SMALL_COPY)
        policy = HFPolicy.from_pretrained(folder, env=env, device="cpu")
        model = NLPO(policy, env, seed=0, top_mask=0.5, n_envs=8, device="cpu", **kwargs)
    model.ensure_masking_policy()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    assert not same_weights(model.policy, model.masking_policy)
    return model


@pytest.mark.parametrize("kind", ["transformer", "hf-gpt2"])
def test_the_update_rebuilds_exactly_the_mask_the_rollout_sampled_with(kind, request, monkeypatch):
    model = nlpo_case(kind, request, n_epochs=1)
    recorder = {}

    def recording(masking_policy, top_mask, min_tokens_to_keep):
        recorder["mask"] = Recording(masking_policy, top_mask, min_tokens_to_keep)
        return recorder["mask"]

    monkeypatch.setattr("agents.algorithms.nlpo.TopPMask", recording)
    batch = model.collect_rollout().unpack()
    sampled = recorder["mask"].allowed[:, : batch.tokens.shape[1]]
    valid = batch.mask
    prompt_lengths = model.policy.prompt_lengths(batch.prompts)
    allowed, masked, flips = model.action_masks(batch, prompt_lengths)
    assert torch.equal(allowed[valid], sampled[valid])
    assert not flips.any()
    assert (masked[valid] > 0).float().mean() > 0.5  # the mask is really acting
    # The sampled action is always inside the mask, and the mask is what the stored counts say.
    actions = batch.tokens.long()
    assert allowed.gather(-1, actions[..., None]).squeeze(-1)[valid].all()
    assert torch.equal(allowed.sum(-1)[valid], batch.extra.long()[valid])
    # The update's old policy: its masked scores of the rollout equal the stored log-probs (ratio 1).
    model.policy.eval()
    with torch.no_grad():
        logits, values = model.policy.sequence_logits(
            batch.prompts, batch.tokens, batch.lengths, prompt_lengths
        )
        scores = score_actions(
            logits.masked_fill(~allowed, float("-inf")),
            torch.where(valid, actions, model.policy.tokenizer.eos_id),
            values,
            valid,
            ~allowed,
        )
        unmasked = model.evaluate_rollout(batch)
    torch.testing.assert_close(scores.log_probs, batch.log_probs, atol=2e-5, rtol=0)
    torch.testing.assert_close(scores.values, batch.values, atol=0.02, rtol=0.01)  # stored in bfloat16
    # ... and they are not the unmasked policy's: masking moved them.
    assert (unmasked.log_probs - batch.log_probs)[valid].abs().max() > 0.1


def test_the_rollout_drops_ended_rows_in_the_masking_policys_cache_too(monkeypatch):
    model = nlpo_case("transformer", None, env=gym.make("TextGen-SCAN-v0"))
    recorder = {}

    def recording(*args):
        recorder["mask"] = Recording(*args)
        return recorder["mask"]

    monkeypatch.setattr("agents.algorithms.nlpo.TopPMask", recording)
    batch = model.collect_rollout().unpack()
    assert recorder["mask"].selects >= 1
    allowed, _, flips = model.action_masks(batch, model.policy.prompt_lengths(batch.prompts))
    valid = batch.mask
    assert torch.equal(allowed[valid], recorder["mask"].allowed[:, : batch.tokens.shape[1]][valid])
    assert not flips.any()


def test_a_float_flip_at_the_sets_boundary_keeps_the_sampled_action_inside(monkeypatch):
    """Where re-scoring ranks the sampled id just outside the stored count (two ids tied within float
    noise), it takes the last kept place: the mask keeps its size and holds the action."""
    model = nlpo_case("transformer", None)
    batch = model.collect_rollout().unpack()
    prompt_lengths = model.policy.prompt_lengths(batch.prompts)
    honest, _, _ = model.action_masks(batch, prompt_lengths)
    # Pretend the rollout kept two ids fewer where it kept 3+: some sampled ids now rank outside.
    batch.extra = (batch.extra.long() - 2 * (batch.extra.long() >= 3).long()).to(batch.extra.dtype)
    allowed, _, flips = model.action_masks(batch, prompt_lengths)
    valid = batch.mask
    assert flips.any()
    assert allowed.gather(-1, batch.tokens.long()[..., None]).squeeze(-1)[valid].all()
    assert torch.equal(allowed.sum(-1)[valid], batch.extra.long()[valid])
    assert not (allowed & ~honest)[valid].any()  # a subset of the honest set, flips included


def test_the_update_scores_in_eval_mode_as_the_rollout_sampled_with_dropout(monkeypatch):
    kwargs = TINY | {"policy_kwargs": {"n_layer": 1, "n_embd": 32, "dropout": 0.1}}
    model = NLPO("TransformerPolicy", copy_env(), seed=0, **kwargs)
    traj = model.collect_rollout()
    modes = []

    def spy_on(policy):
        original = policy.sequence_logits

        def spy(*args):
            modes.append((policy is model.policy, policy.training))
            return original(*args)

        monkeypatch.setattr(policy, "sequence_logits", spy)

    spy_on(model.policy)
    spy_on(model.masking_policy)
    model.policy.train()
    stats = model.train(traj)
    assert modes and not any(training for _, training in modes)
    assert any(is_policy for is_policy, _ in modes) and not all(is_policy for is_policy, _ in modes)
    # Before the first step the ratio is 1: the first minibatch's approximate KL is ~0.
    assert stats["approx_kl"] < 0.05


# ------------------------------------------------------------------ the schedule and learning


def test_the_masking_policy_is_refreshed_every_target_update_iterations_updates():
    torch.manual_seed(0)
    model = NLPO("TransformerPolicy", copy_env(), seed=0, target_update_iterations=3, **TINY)
    initial = [p.clone() for p in model.policy.state_dict().values()]
    assert model.masking_policy is None
    traj = model.collect_rollout()
    assert same_weights(model.masking_policy, model.policy)  # frozen when the first rollout starts
    assert all(not p.requires_grad for p in model.masking_policy.parameters())
    snapshot = initial
    for update in range(1, 8):
        model.train(traj)
        masking = list(model.masking_policy.state_dict().values())
        if update % 3 == 0:
            assert same_weights(model.masking_policy, model.policy), update
            snapshot = [p.clone() for p in masking]
        else:
            assert not same_weights(model.masking_policy, model.policy), update
            assert all(torch.equal(a, b) for a, b in zip(masking, snapshot, strict=True)), update
        assert model.masking_policy_age == update % 3
        traj = model.collect_rollout()


class Collect(KVWriter):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def write(self, key_values, key_excluded, step=0) -> None:
        self.rows.append(dict(key_values))


def test_nlpo_masks_while_it_learns_the_copy_task():
    torch.manual_seed(0)
    model = NLPO(
        "TransformerPolicy",
        copy_env(),
        seed=0,
        learning_rate=1e-3,
        n_envs=32,
        device="cpu",
        policy_kwargs={"n_layer": 1, "n_embd": 32},
    )
    writer = Collect()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    model.learn(2_000)
    masked = [row["train/masked_ids_mean"] for row in writer.rows]
    assert len(masked) >= 10 and all(m >= 0 for m in masked)
    # Random weights spread mass over all 7 takeable ids: the first masking policy (frozen at the start)
    # masks none at 0.9. From its first refresh (after update 5) it is the sharper trained policy, whose
    # top-p set shrinks as it learns.
    assert masked[:5] == [0.0] * 5 and 0 < masked[5] < sum(masked[-3:]) / 3, masked
    assert all(row["train/mask_rank_flips"] == 0 for row in writer.rows)


# ------------------------------------------------------------------ checkpoints


def test_the_masking_policy_and_its_age_survive_a_checkpoint_and_resume_exactly(tmp_path):
    kwargs = {"seed": 3, "target_update_iterations": 3, "kl_coef": 0.05, **TINY}
    torch.manual_seed(0)
    straight = NLPO("TransformerPolicy", copy_env(), **kwargs)
    initial = {k: v.clone() for k, v in straight.policy.state_dict().items()}
    straight.learn(96).learn(96, reset_num_timesteps=False)

    first = NLPO("TransformerPolicy", copy_env(), **kwargs)
    first.policy.load_state_dict(initial)
    (tmp_path / "fresh").mkdir()
    first.save(tmp_path / "fresh" / "model.zip")  # before any rollout: no masking policy yet
    assert NLPO.load(tmp_path / "fresh" / "model.zip", device="cpu").masking_policy is None
    first.learn(96)
    assert first._n_updates == 4 and first.masking_policy_age == 1  # refreshed after update 3
    first.save(tmp_path / "half.zip")
    resumed = NLPO.load(tmp_path / "half.zip", env=copy_env(), device="cpu")
    assert resumed.masking_policy_age == 1
    assert same_weights(resumed.masking_policy, first.masking_policy)
    assert not same_weights(resumed.masking_policy, resumed.policy)
    assert (resumed.top_mask, resumed.min_tokens_to_keep, resumed.target_update_iterations) == (0.9, 2, 3)
    resumed.learn(96, reset_num_timesteps=False)
    assert resumed.num_timesteps == straight.num_timesteps
    assert same_weights(resumed.masking_policy, straight.masking_policy)
    for a, b in zip(parameters(straight.policy), parameters(resumed.policy), strict=True):
        assert torch.equal(a, b)


# peft's own call of a transformers property renamed in 5.x (not ours to fix).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_a_lora_policy_gets_a_masking_policy_that_can_decode(request):
    pytest.importorskip("peft")
    import peft

    from agents.policies.hf import HFPolicy

    folder = str(request.getfixturevalue("hf_gpt2_dir"))
    env = gym.make("TextGen-Copy-v0", tokenizer=folder, **SMALL_COPY)
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM", fan_in_fan_out=True
    )
    policy = HFPolicy.from_pretrained(folder, env=env, device="cpu", lora=lora)
    model = NLPO(policy, env, seed=0, n_envs=8, device="cpu", target_update_iterations=1)
    stats = model.train(model.collect_rollout())
    assert isinstance(model.masking_policy, HFPolicy) and stats["mask_rank_flips"] == 0
    assert same_weights(model.masking_policy, model.policy)  # refreshed after the one update


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_mask": 0.0}, r"top_mask must be a probability in \(0, 1\] .* got 0.0"),
        ({"top_mask": 1.5}, r"top_mask must be a probability in \(0, 1\] .* got 1.5"),
        ({"top_mask": float("nan")}, r"top_mask must be a probability in \(0, 1\] .* got nan"),
        ({"min_tokens_to_keep": 0}, r"min_tokens_to_keep must be an integer >= 1 .* got 0"),
        ({"min_tokens_to_keep": 2.5}, r"min_tokens_to_keep must be an integer >= 1 .* got 2.5"),
        ({"target_update_iterations": 0}, r"target_update_iterations must be an integer >= 1 .* got 0"),
        ({"target_update_iterations": -3}, r"target_update_iterations must be an integer >= 1 .* got -3"),
    ],
)
def test_bad_masking_arguments_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NLPO("TransformerPolicy", copy_env(), **TINY, **kwargs)


def test_training_on_a_rollout_without_masks_is_a_clear_error():
    from agents.algorithms import PPO

    torch.manual_seed(0)
    traj = PPO("TransformerPolicy", copy_env(), seed=0, **TINY).collect_rollout()
    model = NLPO("TransformerPolicy", copy_env(), seed=0, **TINY)
    with pytest.raises(ValueError, match="NLPO.train needs a rollout from NLPO.collect_rollout"):
        model.train(traj)
