"""PPO end to end: ours vs unmodified Stable-Baselines3 PPO with the same transformer, in one run.

    lmrl-gym bench ppo-vs-sb3 [--env TextGen-v0 --max-new-tokens N --n-envs 64 --timesteps 4096 --repeats 3]

Both train the same-size transformer policy (``agents.sb3`` for SB3) on the same env with the same
number of env steps, 4 epochs and comparable minibatches. Reported: env steps (tokens) per second of
``learn`` (rollout + update), the bytes each keeps for one rollout of the same steps (our trajectories
vs SB3's ``DictRolloutBuffer``), and the floating-point operations each spends per env step (one more,
untimed ``learn`` of each under ``torch.utils.flop_counter.FlopCounterMode``, which counts the matrix
products and attention of the forward and backward passes). Both spend nearly all their time in the
transformer, so the ratio of FLOPs per step is about the speed ratio one can reach at equal FLOP/s: where
the speed ratio falls short, that column says whether doing less work or doing it faster is the way on.

The command line (its flags) is :mod:`agents.commands.bench`; this module measures and formats.
"""

from __future__ import annotations

import copy
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO as SB3PPO
from torch.utils.flop_counter import FlopCounterMode

import lmrl_gym  # noqa: F401
from agents.algorithms import PPO
from agents.bench.decoding import interleaved_medians
from agents.bench.machine import describe_machine
from agents.sb3 import SB3VecEnv
from lmrl_gym.vector_env import TextGenVectorEnv


def sb3_buffer_bytes(model: SB3PPO) -> int:
    buffer = model.rollout_buffer
    arrays = [
        *buffer.observations.values(),
        buffer.actions,
        buffer.rewards,
        buffer.returns,
        buffer.episode_starts,
        buffer.values,
        buffer.log_probs,
        buffer.advantages,
    ]
    return int(sum(np.asarray(a).nbytes for a in arrays))


def run(
    env_id: str,
    n_envs: int,
    timesteps: int,
    repeats: int,
    n_layer: int,
    n_embd: int,
    max_new_tokens: int | None = None,
) -> dict[str, float]:
    """Time, count and size both; ``max_new_tokens`` overrides the env's episode cap (None: the env's)."""
    env = gym.make(env_id, **({} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}))
    sizes = {"n_layer": n_layer, "n_embd": n_embd}

    def ours() -> PPO:
        torch.manual_seed(0)
        model = PPO(
            "TransformerPolicy",
            env,
            n_envs=n_envs,
            n_epochs=4,
            batch_size=16,
            policy_kwargs=sizes,
            seed=0,
            device="cpu",
        )
        return model.learn(timesteps)

    # SB3 collects n_steps per env per rollout; choose them so one rollout has about as many env steps as
    # ours (n_envs episodes of the mean episode length) and minibatches of about as many steps.
    venv = SB3VecEnv(TextGenVectorEnv(num_envs=n_envs, info_text=False, **dict(env.unwrapped.setup.kwargs)))
    episode_length = max(2, round(float(ours_probe_length(env, n_envs, sizes))))

    def theirs() -> SB3PPO:
        torch.manual_seed(0)
        model = SB3PPO(
            "TransformerPolicy",
            venv,
            n_steps=episode_length,
            batch_size=16 * episode_length,
            n_epochs=4,
            policy_kwargs=sizes,
            seed=0,
            device="cpu",
        )
        return model.learn(timesteps)

    def timed(fn) -> tuple[float, object]:
        times, model = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            model = fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times), model

    def flops_per_step(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            model = fn()
        return counter.get_total_flops() / model.num_timesteps

    ours_s, ours_model = timed(ours)
    theirs_s, theirs_model = timed(theirs)
    ours_flops, theirs_flops = flops_per_step(ours), flops_per_step(theirs)
    traj = ours_model.collect_rollout()
    update = update_against_limit(ours_model, traj, repeats)
    ours_bytes_per_step = traj.nbytes / traj.num_steps
    sb3_steps = theirs_model.rollout_buffer.buffer_size * n_envs
    sb3_bytes_per_step = sb3_buffer_bytes(theirs_model) / sb3_steps
    return {
        "ours_steps_per_s": ours_model.num_timesteps / ours_s,
        "sb3_steps_per_s": theirs_model.num_timesteps / theirs_s,
        "speed_ratio": (ours_model.num_timesteps / ours_s) / (theirs_model.num_timesteps / theirs_s),
        "ours_bytes_per_step": ours_bytes_per_step,
        "sb3_bytes_per_step": sb3_bytes_per_step,
        "storage_ratio": ours_bytes_per_step / sb3_bytes_per_step,
        "ours_flops_per_step": ours_flops,
        "sb3_flops_per_step": theirs_flops,
        "flops_ratio": theirs_flops / ours_flops,
        "ours_gflops_per_s": ours_flops * ours_model.num_timesteps / ours_s / 1e9,
        "sb3_gflops_per_s": theirs_flops * theirs_model.num_timesteps / theirs_s / 1e9,
        "mean_episode_length": float(traj.lengths.float().mean()),
        **update,
    }


def update_against_limit(model: PPO, traj, repeats: int) -> dict[str, float]:
    """Our PPO update (``model.train(traj)``: every epoch and minibatch) against the model's own rate.

    The limit is one forward + backward of the same policy over all of the rollout's episodes in one batch
    (the same sequences, the same scoring code, log-prob + value + entropy outputs back-propagated): the
    largest matrices these sequences allow. The update does that work ``n_epochs`` times in minibatches of
    ``batch_size`` episodes, plus the loss and one optimizer step per minibatch. Both are timed from the
    same weights (restored before each repeat; medians, the two timed in turns) and counted with
    ``FlopCounterMode``.
    """
    policy = model.policy
    weights = copy.deepcopy(policy.state_dict())
    optimizer_state = copy.deepcopy(model.optimizer.state_dict())
    batch = traj.unpack()

    def train() -> None:
        model.train(traj)

    def one_batch() -> None:
        scores = policy.evaluate_sequences(batch.prompts, batch.tokens, batch.lengths)
        (scores.log_probs.sum() + scores.values.sum() + scores.entropy.sum()).backward()

    def restore() -> None:
        policy.load_state_dict(weights)
        model.optimizer.load_state_dict(optimizer_state)
        policy.zero_grad(set_to_none=True)

    def flops(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        restore()
        return counter.get_total_flops()

    policy.eval()  # as the update scores (dropout off)
    seconds = interleaved_medians(
        {"update": train, "limit": one_batch}, repeats, model.device, before=restore
    )
    restore()
    update_s, limit_s = seconds["update"], seconds["limit"]
    update_gflops = flops(train) / update_s / 1e9
    limit_gflops = flops(one_batch) / limit_s / 1e9
    return {
        "update_seconds": update_s,
        "update_gflops_per_s": update_gflops,
        "limit_seconds": limit_s,
        "limit_gflops_per_s": limit_gflops,
        "update_vs_limit": update_gflops / limit_gflops,
        "episodes_per_rollout": float(batch.lengths.shape[0]),
        "minibatch_episodes": float(model.batch_size),
    }


def ours_probe_length(env, n_envs: int, sizes: dict) -> float:
    """Mean episode length of an untrained policy (to size SB3's rollout like ours)."""
    probe = PPO("TransformerPolicy", env, n_envs=n_envs, policy_kwargs=sizes, seed=0, device="cpu")
    return float(probe.collect_rollout().lengths.float().mean())


def format_report(result: dict[str, float], settings: dict[str, object]) -> str:
    """The markdown table of :func:`run`'s ``result`` under a line naming the settings and the machine.

    :param settings: :func:`run`'s arguments (``env_id``, ``n_envs``, ``timesteps``, ``repeats``,
        ``n_layer``, ``n_embd``).
    """
    c, r = settings, result
    return "\n".join(
        [
            f"{c['env_id']}, mean episode length {r['mean_episode_length']:.1f} tokens, {c['n_envs']} envs, "
            f"{c['timesteps']} env steps, transformer {c['n_layer']} x {c['n_embd']}, 4 epochs, medians of "
            f"{c['repeats']}",
            describe_machine("cpu"),
            "",
            "| PPO | lmrl-gym | SB3 + agents.sb3 policy | ratio |",
            "|---|---:|---:|---:|",
            f"| env steps/s (rollout + update) | {r['ours_steps_per_s']:,.0f} | {r['sb3_steps_per_s']:,.0f} | "
            f"{r['speed_ratio']:.1f}x |",
            f"| rollout storage, bytes per env step | {r['ours_bytes_per_step']:,.0f} | "
            f"{r['sb3_bytes_per_step']:,.0f} | {r['storage_ratio']:.3f} |",
            f"| FLOPs per env step (matmul + attention, forward + backward) | "
            f"{r['ours_flops_per_step'] / 1e6:,.1f} M | {r['sb3_flops_per_step'] / 1e6:,.1f} M | "
            f"SB3 does {r['flops_ratio']:.1f}x the work |",
            f"| GFLOP/s achieved | {r['ours_gflops_per_s']:,.1f} | {r['sb3_gflops_per_s']:,.1f} | "
            f"{r['ours_gflops_per_s'] / r['sb3_gflops_per_s']:.2f}x |",
            "",
            f"Our update against the model's own limit (the same {r['episodes_per_rollout']:.0f} episodes: PPO's "
            f"4 epochs of minibatches of {r['minibatch_episodes']:.0f} vs one forward + backward over all of "
            "them in one batch):",
            "",
            "| our PPO update | seconds | GFLOP/s | of the limit |",
            "|---|---:|---:|---:|",
            f"| `PPO.train` on one rollout (all epochs, minibatches, optimizer steps) | "
            f"{r['update_seconds']:.3f} | {r['update_gflops_per_s']:,.1f} | {r['update_vs_limit']:.2f} |",
            f"| limit: one forward + backward over the whole rollout | {r['limit_seconds']:.3f} | "
            f"{r['limit_gflops_per_s']:,.1f} | 1.00 |",
        ]
    )
