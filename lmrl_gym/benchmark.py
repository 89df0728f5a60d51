"""Speed of the environment suite, each figure a ratio measured in one run on one machine.

    python -m lmrl_gym.benchmark                 # both benchmarks, defaults below
    python -m lmrl_gym.benchmark --num-envs 256 --steps 200 --repeats 5

1. Env steps/s of :class:`TextGenVectorEnv` vs ``gymnasium.vector.SyncVectorEnv`` of :class:`TextGenEnv`
   (same task, reward, seeds and actions; autoreset SAME_STEP on both).
2. Episodes/s of the batched BLEU reward vs ``sacrebleu.sentence_bleu`` called per episode on the same
   episodes (ids written as words, ``tokenize="none"``), and the largest difference between the values.

Medians over ``--repeats`` timed repetitions; the machine is shared, so only the ratios mean much.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from lmrl_gym.env import TextGenEnv
from lmrl_gym.rewards.bleu import batched_sentence_bleu, pad_sequences
from lmrl_gym.vector_env import TextGenVectorEnv


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: caches, lazy imports, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def action_plan(steps: int, num_envs: int, vocab_size: int, eos_id: int, invalid: tuple[int, ...], seed: int):
    """Random valid actions, with eos 1 time in 8 so episodes end and autoreset at a realistic rate."""
    rng = np.random.default_rng(seed)
    valid = np.setdiff1d(np.arange(vocab_size), np.array(invalid))
    plan = rng.choice(valid, size=(steps, num_envs))
    plan[rng.random((steps, num_envs)) < 1 / 8] = eos_id
    return plan


def bench_vector_env(task: str, num_envs: int, steps: int, repeats: int) -> dict[str, float]:
    native = TextGenVectorEnv(num_envs=num_envs, task=task, info_text=False)
    sync = SyncVectorEnv(
        [lambda: TextGenEnv(task=task) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    tok = native.tokenizer
    plan = action_plan(steps, num_envs, tok.vocab_size, tok.eos_id, tok.invalid_action_ids, seed=0)

    def run(env) -> Callable[[], None]:
        def go() -> None:
            env.reset(seed=0)
            for actions in plan:
                env.step(actions)

        return go

    native_s = median_seconds(run(native), repeats)
    sync_s = median_seconds(run(sync), repeats)
    total = steps * num_envs
    return {
        "native_steps_per_s": total / native_s,
        "sync_steps_per_s": total / sync_s,
        "ratio": sync_s / native_s,
    }


def random_episodes(num_episodes: int, vocab_size: int, seed: int):
    """Hypotheses of 5-30 tokens with 1-3 references each, references partly overlapping the hypothesis."""
    rng = np.random.default_rng(seed)
    hyps, refs = [], []
    for _ in range(num_episodes):
        hyp = rng.integers(0, vocab_size, size=rng.integers(5, 31))
        episode_refs = []
        for _ in range(rng.integers(1, 4)):
            ref = hyp.copy()
            noise = rng.random(len(ref)) < 0.3
            ref[noise] = rng.integers(0, vocab_size, size=int(noise.sum()))
            episode_refs.append(ref[: rng.integers(max(1, len(ref) - 5), len(ref) + 1)].tolist())
        hyps.append(hyp.tolist())
        refs.append(episode_refs)
    return hyps, refs


def bench_bleu(num_episodes: int, repeats: int, vocab_size: int = 50) -> dict[str, float]:
    import sacrebleu

    hyps, refs = random_episodes(num_episodes, vocab_size, seed=0)
    hyp, hyp_len = pad_sequences(hyps)
    num_refs = max(len(r) for r in refs)
    flat = [r[j] if j < len(r) else [] for r in refs for j in range(num_refs)]
    ref, ref_len = pad_sequences(flat)
    ref = ref.view(num_episodes, num_refs, -1)
    ref_len = ref_len.view(num_episodes, num_refs)
    ref_mask = torch.tensor([[j < len(r) for j in range(num_refs)] for r in refs])
    hyp_words = [" ".join(f"w{i}" for i in h) for h in hyps]
    ref_words = [[" ".join(f"w{i}" for i in r) for r in rs] for rs in refs]
    metric = sacrebleu.metrics.BLEU(tokenize="none", effective_order=True)

    def ours() -> torch.Tensor:
        # As BLEUReward calls it inside the environments (inputs built by the env, not re-checked).
        return batched_sentence_bleu(hyp, hyp_len, ref, ref_len, ref_mask=ref_mask, check_values=False)

    def theirs() -> list[float]:
        return [metric.sentence_score(h, r).score for h, r in zip(hyp_words, ref_words, strict=True)]

    ours_s = median_seconds(ours, repeats)
    theirs_s = median_seconds(theirs, repeats)
    max_diff = float(np.max(np.abs(ours().numpy() - np.array(theirs()))))
    return {
        "ours_episodes_per_s": num_episodes / ours_s,
        "sacrebleu_episodes_per_s": num_episodes / theirs_s,
        "ratio": theirs_s / ours_s,
        "max_abs_diff": max_diff,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="numbers", help="task of the vector-env benchmark")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed repetition")
    parser.add_argument(
        "--episodes", type=int, nargs="+", default=[256, 1024], help="batch sizes of the BLEU benchmark"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} repeats\n"
    )
    env = bench_vector_env(args.task, args.num_envs, args.steps, args.repeats)
    bleu = {n: bench_bleu(n, args.repeats) for n in args.episodes}
    print("| benchmark | lmrl-gym | peer | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| env steps/s, {args.num_envs} envs, task {args.task}: TextGenVectorEnv vs SyncVectorEnv "
        f"| {env['native_steps_per_s']:,.0f} | {env['sync_steps_per_s']:,.0f} | {env['ratio']:.1f}x |"
    )
    for n, result in bleu.items():
        print(
            f"| BLEU episodes/s, batches of {n}: batched BLEU vs sacrebleu per episode "
            f"| {result['ours_episodes_per_s']:,.0f} | {result['sacrebleu_episodes_per_s']:,.0f} "
            f"| {result['ratio']:.1f}x |"
        )
    worst = max(result["max_abs_diff"] for result in bleu.values())
    print(f"\nlargest |ours - sacreBLEU| over all BLEU episodes: {worst:.2e} (0-100 scale)")


if __name__ == "__main__":
    main()
