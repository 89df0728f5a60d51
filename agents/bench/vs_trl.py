"""GRPO end to end: ours against TRL's ``GRPOTrainer`` on the same task, model size and settings, in one run.

    lmrl-gym bench vs-trl [--updates 300 --seeds 3 --threads N --precision fp32 bf16 --device auto]
    lmrl-gym bench vs-trl --quick    (50 updates, 1 seed)

Needs TRL: pip install "lmrl-gym[bench]". Nothing is downloaded: the model is a random-weight GPT-2 and the
tokenizer a byte-level BPE trained on the built-in tasks' text (:mod:`agents.hf_tiny`), both built here.

Three rows, each trained from scratch on every seed:

- **ours, TransformerPolicy**: :class:`agents.GRPO` over our own transformer (2 layers x 128, 4 heads,
  the same 400-token BPE vocabulary), on a ``TextGen`` env of the task;
- **ours, HFPolicy**: :class:`agents.GRPO` over :class:`~agents.policies.hf.HFPolicy` wrapping a copy of
  the very ``transformers`` GPT-2 (same config, same initial weights) that TRL trains on that seed;
- **TRL GRPOTrainer**: TRL's trainer on that GPT-2, ``model.generate`` sampling (no vLLM).

The task is the built-in ``copy`` task (prompts of 2 to 8 symbol words, e.g. ``"c a d"``; the train split's
4,000 prompts for both sides, each side drawing its own random groups of prompts from them). The reward is
one Python function for both, :func:`copy_score` on the decoded completion: the share of positions holding
the prompt's word, over the longer of the two word counts (partial credit; extra words cost). Both sides
use TRL's GRPO defaults, named alike in both (:data:`GRPO_SETTINGS`: ``beta=0``, ``loss_type="dapo"``,
``scale_rewards="group"``, ``num_iterations=1``, ``epsilon=0.2``), with 16 prompts x 4 completions = 64
completions and one optimizer step (AdamW, fused, no weight decay, gradient norm clipped at 1) per update,
at most 16 new tokens, learning rate 5e-4 (constant: TRL's linear decay is switched off), temperature 1
with no top-k / top-p, no dropout, no gradient checkpointing (TRL's default is on), and no logging or
saving beyond what each does on its own. ``--precision bf16`` runs TRL with ``bf16=True`` (autocast on
the model's forward, fp32 weights, generation included) and ours under ``torch.autocast(bfloat16)``
around each update's training pass, fp32 weights and optimizer too; our rollout also runs under it on
CUDA, while on CPU it decodes in fp32 (faster there at these sizes: see :class:`OurRun`).

Timing, per seed: ``--warmup`` updates first (not timed), then ``--updates`` timed updates.

- **ours**: each update is one ``model.learn(1, reset_num_timesteps=False)`` (one rollout and one
  update, as ``learn`` does them); its ``collect_rollout`` is wrapped to time *generation* (sampling the
  64 completions token by token, env steps and the reward);
- **TRL**: a ``TrainerCallback`` stamps the clock when an update's turn starts and at its ``on_step_end``; the trainer's
  ``_generate_and_score_completions`` (``model.generate``, decoding, the reward and the advantages) is
  wrapped on the instance to time *generation*.

*Update* is the rest of the update's wall time (scoring the completions with gradients, backward,
optimizer step, bookkeeping). Completion tokens are the real ones, eos included once sampled, padding
not: our rollout's steps; TRL's ``completion_mask``. Reported per row, mean +- std over seeds: completion
tokens/s end to end, the ratio to TRL's, seconds in generation and in update over the timed updates and
the tokens/s of each, mean completion length, and the training reward (mean over each side's last 10%
of timed updates, at least one) after the same number of updates. On CUDA the clock synchronises first.
The rows take turns, one update each (TRL's ``train()`` gives ours their turn at every ``on_step_end``;
that time is not TRL's), so that a busy machine slows every row alike, and all run in one thread (see
:class:`TRLRun`).

The command line (its flags) is :mod:`agents.commands.bench`; this module measures and formats.
"""

from __future__ import annotations

import copy
import functools
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agents.bench.decoding import DTYPES, autocast
from agents.bench.machine import describe_machine
from agents.devices import resolve_device
from lmrl_gym.rewards import batched

# The earlier measurement's settings (issue 13): a GPT-2-sized model, 2 layers x 128 wide, 4 heads.
N_LAYER, N_EMBD, N_HEAD = 2, 128, 4
TASK = "copy"
PROMPTS_PER_UPDATE = 16
MAX_NEW_TOKENS = 16
# TRL's GRPOConfig defaults (1.x), except the learning rate (TRL's 1e-6 is for large pretrained models);
# the names are the same in our GRPO and in GRPOConfig, so one dict configures both.
GRPO_SETTINGS: dict[str, Any] = {
    "num_generations": 4,
    "learning_rate": 5e-4,
    "beta": 0.0,
    "loss_type": "dapo",
    "scale_rewards": "group",
    "num_iterations": 1,
    "epsilon": 0.2,
}
MODES = {
    "default": {"updates": 300, "seeds": 3, "warmup": 2},
    "quick": {"updates": 50, "seeds": 1, "warmup": 2},
    "smoke": {"updates": 2, "seeds": 1, "warmup": 1},
}
PRECISIONS = DTYPES  # bench decoding's: autocast to bfloat16 for "bf16", fp32 weights and optimizer
ROWS = ("ours, TransformerPolicy", "ours, HFPolicy (TRL's model)", "TRL GRPOTrainer")
TRL_ROW = ROWS[-1]
REWARD_TAIL = 0.1  # the reward reported: the mean over this share of the last timed updates


class MissingTRLError(ImportError):
    """TRL (the ``bench`` extra) is not installed."""


def import_trl() -> Any:
    """The ``trl`` module, or :class:`MissingTRLError` saying what to install."""
    try:
        import trl
    except ImportError as err:
        raise MissingTRLError(
            f'lmrl-gym bench vs-trl needs TRL, which is not installed ({err}): pip install "lmrl-gym[bench]"'
        ) from err
    return trl


# ---------------------------------------------------------------------- the task's reward


def copy_score(completion: str, prompt: str) -> float:
    """Partial credit for copying ``prompt``: positions ``i`` where the completion's word ``i`` is the
    prompt's word ``i``, over the longer of the two word counts (so extra words cost too). In [0, 1]."""
    written, wanted = completion.split(), prompt.split()
    matches = sum(a == b for a, b in zip(written, wanted, strict=False))  # unequal lengths score too
    return matches / max(len(written), len(wanted), 1)


@batched
def our_copy_reward(texts: list[str], references: list[list[str]], prompts: list[str]) -> list[float]:
    """:func:`copy_score` as the env's batched reward (one call per env step for the episodes ending)."""
    return [copy_score(text, prompt) for text, prompt in zip(texts, prompts, strict=True)]


# ---------------------------------------------------------------------- measurements


@dataclass
class UpdateLog:
    """Per update, in order: wall seconds of the whole update and of its generation, completion tokens
    generated and the batch's mean reward."""

    total_s: list[float] = field(default_factory=list)
    generation_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def summary(self, warmup: int) -> dict[str, float]:
        """One seed's figures over the updates after ``warmup``."""
        total = sum(self.total_s[warmup:])
        generation = sum(self.generation_s[warmup:])
        tokens = sum(self.tokens[warmup:])
        update = max(total - generation, 1e-9)
        rewards = self.rewards[warmup:]
        tail = rewards[-max(1, round(REWARD_TAIL * len(rewards))) :]
        completions = len(rewards) * PROMPTS_PER_UPDATE * GRPO_SETTINGS["num_generations"]
        return {
            "updates": len(rewards),
            "seconds": total,
            "tokens": tokens,
            "tokens_per_s": tokens / total,
            "generation_s": generation,
            "generation_tokens_per_s": tokens / max(generation, 1e-9),
            "update_s": update,
            "update_tokens_per_s": tokens / update,
            "completion_length": tokens / completions,
            "reward": statistics.fmean(tail),
        }


def make_clock(device: torch.device) -> Callable[[], float]:
    """``time.perf_counter`` that first waits for the GPU's queued work (on CUDA)."""
    if device.type == "cuda":

        def clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return clock
    return time.perf_counter


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No ``transformers`` progress bars or info / warning lines (the benchmark's output is its table)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


@dataclass
class Assets:
    """What every row and seed shares: the tokenizer's folder, the GPT-2's config and the env."""

    folder: Path
    config: Any
    env: Any
    prompts: list[str]


def build_assets(folder: Path) -> Assets:
    """The BPE tokenizer and a GPT-2 config of the benchmark's size (:func:`agents.hf_tiny.build_gpt2`),
    and the copy task's env on that tokenizer with :func:`our_copy_reward`."""
    import gymnasium as gym
    from transformers import GPT2Config

    import lmrl_gym  # noqa: F401  (registers TextGen-v0)
    from agents.hf_tiny import build_gpt2

    build_gpt2(folder, n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD)
    # No dropout on either side (GPT2Config's default is 0.1; ours has none): TRL's disable_dropout is off
    # by default, and dropout would make the update's log-probs differ from the rollout's.
    config = GPT2Config.from_pretrained(folder, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    env = gym.make(
        "TextGen-v0", task=TASK, tokenizer=str(folder), reward=our_copy_reward, max_new_tokens=MAX_NEW_TOKENS
    )
    prompts = [example.prompt for example in env.unwrapped.task.examples("train")]
    return Assets(folder, config, env, prompts)


class OurRun:
    """Our GRPO on ``policy``, one update per :meth:`step` (one ``learn`` of one rollout), timed as the
    module says."""

    def __init__(self, policy: Any, assets: Assets, seed: int, precision: str, device: torch.device) -> None:
        from agents.algorithms import GRPO

        self.model = GRPO(
            policy,
            assets.env,
            n_envs=PROMPTS_PER_UPDATE * GRPO_SETTINGS["num_generations"],
            batch_size=None,  # one minibatch: one optimizer step per rollout, as TRL's with these settings
            max_grad_norm=1.0,
            seed=seed,
            device=device,
            **GRPO_SETTINGS,
        )
        self.precision, self.device = precision, device
        self.clock, self.log = make_clock(device), UpdateLog()
        collect = self.model.collect_rollout

        def timed_collect() -> Any:
            start = self.clock()
            traj = collect()
            self.log.generation_s.append(self.clock() - start)
            self.log.tokens.append(traj.num_steps)
            self.log.rewards.append(float(traj.episode_returns().mean()))
            return traj

        self.model.collect_rollout = timed_collect  # learn calls self.collect_rollout()
        if precision == "bf16":
            train = self.model.train

            def bf16_train(traj: Any) -> Any:
                with autocast(device, precision):
                    return train(traj)

            self.model.train = bf16_train
            # On CPU our rollout decodes in fp32: per token, autocast's casts cost more than bf16 saves at
            # these sizes (a 64-row rollout of 16 tokens, 2 x 128, 400 ids, 2 threads of an Intel Xeon with
            # AMX: 26 ms fp32, 32 ms under bf16 autocast; equal at 256 rows x 1000 ids).
            if device.type != "cpu":

                def bf16_collect() -> Any:
                    with autocast(device, precision):
                        return timed_collect()

                self.model.collect_rollout = bf16_collect

    def step(self) -> None:
        start = self.clock()
        self.model.learn(1, reset_num_timesteps=False, log_interval=0)  # 1 env step: one rollout
        self.log.total_s.append(self.clock() - start)


class TRLRun:
    """TRL's ``GRPOTrainer`` on ``model``, timed as the module says.

    ``trainer.train()`` is one loop that cannot be called an update at a time, so :meth:`train` runs it in
    the calling thread and hands each turn to the other rows from inside it: at every ``on_step_end`` it
    calls ``between()`` (one update of each other row), then restarts its clock. So TRL's updates
    interleave with ours (a busy machine slows every row alike) and every row runs in the same thread. One
    thread matters on the CPU: torch's OpenMP workers spin between parallel regions only while a process
    has no more OpenMP threads than cores; a second thread running torch (TRL in a thread of its own, as
    this benchmark first did) makes every small op of every row wait for sleeping workers (ours: 17,300
    tok/s alone, 8,900 beside such a thread, on the 2-core Xeon of the README). The time in ``between`` is
    not counted.
    """

    def __init__(
        self, model: Any, assets: Assets, seed: int, steps: int, precision: str, device: torch.device
    ) -> None:
        import_trl()
        from datasets import Dataset
        from transformers import AutoTokenizer, PrinterCallback, ProgressCallback, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        self.clock, self.log = make_clock(device), UpdateLog()
        self._between: Callable[[], None] = lambda: None
        self._started = 0.0
        self._output_dir = tempfile.TemporaryDirectory()
        log, clock, run = self.log, self.clock, self

        def copy_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
            rewards = [copy_score(text, prompt) for text, prompt in zip(completions, prompts, strict=True)]
            log.rewards.append(statistics.fmean(rewards))
            return rewards

        class TakeTurns(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                run._started = clock()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                log.total_s.append(clock() - run._started)
                run._between()
                run._started = clock()

        args = GRPOConfig(
            output_dir=self._output_dir.name,
            per_device_train_batch_size=PROMPTS_PER_UPDATE * GRPO_SETTINGS["num_generations"],
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            max_completion_length=MAX_NEW_TOKENS,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_steps=steps,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            bf16=precision == "bf16",
            fp16=False,
            activation_checkpointing=False,  # TRL's gradient_checkpointing=True default, by its new name
            use_cpu=device.type == "cpu",
            seed=seed,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            **GRPO_SETTINGS,
        )
        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=copy_reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": assets.prompts}),
            processing_class=AutoTokenizer.from_pretrained(assets.folder),
            callbacks=[TakeTurns()],
        )
        # The end-of-training summary is "logged": printed to stdout by these.
        self.trainer.remove_callback(PrinterCallback)
        self.trainer.remove_callback(ProgressCallback)
        generate = self.trainer._generate_and_score_completions

        def timed_generate(inputs: Any) -> dict[str, Any]:
            start = clock()
            output = generate(inputs)
            log.generation_s.append(clock() - start)
            log.tokens.append(int(output["completion_mask"].sum()))
            return output

        self.trainer._generate_and_score_completions = timed_generate  # _prepare_inputs calls it on self

    def train(self, between: Callable[[], None]) -> None:
        """All of TRL's updates (``steps``), calling ``between()`` after each; cleans up after itself."""
        self._between = between
        try:
            with warnings.catch_warnings():
                # TRL 1.16 reads transformers' deprecated is_gradient_checkpointing: not ours to fix.
                warnings.filterwarnings("ignore", message=".*will be removed in v6", category=FutureWarning)
                self.trainer.train()
        finally:
            self._output_dir.cleanup()


def aggregate(summaries: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{figure: {"mean", "std"}}`` over seeds (std 0 for one seed)."""
    return {
        key: {
            "mean": statistics.fmean(s[key] for s in summaries),
            "std": statistics.stdev(s[key] for s in summaries) if len(summaries) > 1 else 0.0,
        }
        for key in summaries[0]
    }


def take_turns(runs: list[OurRun]) -> None:
    """One update of each of ``runs`` (our rows' turn after each of TRL's updates)."""
    for each in runs:
        each.step()


def run(
    updates: int,
    seeds: int,
    warmup: int,
    threads: int,
    precision: str,
    device: str = "auto",
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """Train the three rows for ``warmup + updates`` updates on each of ``seeds`` seeds (0, 1, ...);
    ``{"rows": {row: {"seeds": [summary per seed], "mean_std": aggregate}}, "machine": ..., ...}``.

    :param threads: torch's intra-op threads for every row (restored afterwards).
    :param folder: where to build the tokenizer and model config (default: a temporary folder).
    :raises MissingTRLError: TRL is not installed (checked before anything is built).
    """
    import_trl()
    from agents.policies.hf import HFPolicy
    from agents.policies.transformer import TransformerPolicy

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if warmup < 1:
        raise ValueError(
            f"warmup must be >= 1 (the first update builds caches and optimizer state), got {warmup}"
        )
    torch_device = resolve_device(device)
    steps = warmup + updates
    logs: dict[str, list[UpdateLog]] = {row: [] for row in ROWS}
    with torch_threads(threads), quiet_transformers(), tempfile.TemporaryDirectory() as scratch:
        from transformers import GPT2LMHeadModel

        assets = build_assets(Path(folder or scratch))
        for seed in range(seeds):
            torch.manual_seed(seed)
            policy = TransformerPolicy.for_env(
                assets.env, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, device=torch_device
            )
            torch.manual_seed(seed)
            # A config of its own: transformers' Trainer sets model.config.use_cache = args.use_cache (False)
            # in place, and a model later built from that config would generate without a KV cache.
            gpt2 = GPT2LMHeadModel(copy.deepcopy(assets.config))
            twin = copy.deepcopy(gpt2)  # the same initial weights for ours; TRL trains gpt2 itself
            hf_policy = HFPolicy(twin, assets.env.unwrapped.tokenizer, device=torch_device)
            ours = {
                ROWS[0]: OurRun(policy, assets, seed, precision, torch_device),
                ROWS[1]: OurRun(hf_policy, assets, seed, precision, torch_device),
            }
            trl = TRLRun(gpt2, assets, seed, steps, precision, torch_device)

            trl.train(functools.partial(take_turns, list(ours.values())))
            for row, each in {**ours, TRL_ROW: trl}.items():
                logs[row].append(each.log)
        machine = describe_machine(torch_device)
    rows = {}
    for row, row_logs in logs.items():
        summaries = [log.summary(warmup) for log in row_logs]
        rows[row] = {"seeds": summaries, "mean_std": aggregate(summaries)}
    trl_speed = rows[TRL_ROW]["mean_std"]["tokens_per_s"]["mean"]
    for row in rows.values():
        row["speed_ratio"] = row["mean_std"]["tokens_per_s"]["mean"] / trl_speed
    return {
        "machine": machine,
        "settings": {
            "updates": updates,
            "seeds": seeds,
            "warmup": warmup,
            "threads": threads,
            "precision": precision,
            "device": str(torch_device),
            "task": TASK,
            "model": {"n_layer": N_LAYER, "n_embd": N_EMBD, "n_head": N_HEAD},
            "vocab_size": int(assets.config.vocab_size),
            "prompts_per_update": PROMPTS_PER_UPDATE,
            "max_new_tokens": MAX_NEW_TOKENS,
            "grpo": dict(GRPO_SETTINGS),
        },
        "rows": rows,
    }


# ---------------------------------------------------------------------- report


def _pm(figure: dict[str, float], digits: int = 0, thousands: bool = True) -> str:
    spec = f"{',' if thousands else ''}.{digits}f"
    return f"{figure['mean']:{spec}} +- {figure['std']:{spec}}"


def format_report(result: dict[str, Any]) -> str:
    """The markdown table of :func:`run`'s ``result``, under a line of settings and the machine's, and a
    line saying where each row's time goes."""
    s, rows = result["settings"], result["rows"]
    grpo = s["grpo"]
    tail = max(1, round(REWARD_TAIL * s["updates"]))
    lines = [
        f"GRPO on the {s['task']} task: GPT-2-sized model {s['model']['n_layer']} x {s['model']['n_embd']}, "
        f"{s['model']['n_head']} heads, {s['vocab_size']}-token BPE; {s['prompts_per_update']} prompts x "
        f"{grpo['num_generations']} = {s['prompts_per_update'] * grpo['num_generations']} completions per "
        f"update, <= {s['max_new_tokens']} new tokens, lr {grpo['learning_rate']:g}, {s['precision']}, loss "
        f"{grpo['loss_type']}, beta {grpo['beta']:g}; {s['updates']} timed updates after {s['warmup']} "
        f"warm-up, {s['seeds']} seed{'s' * (s['seeds'] != 1)}, mean +- std",
        result["machine"],
        "",
        "| GRPO | completion tok/s, end to end | vs TRL | generation s | generation tok/s | update s | "
        f"update tok/s | tokens / completion | reward (last {tail} updates) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        m = row["mean_std"]
        lines.append(
            f"| {name} | {_pm(m['tokens_per_s'])} | {row['speed_ratio']:.2f}x | {_pm(m['generation_s'], 1)} | "
            f"{_pm(m['generation_tokens_per_s'])} | {_pm(m['update_s'], 1)} | {_pm(m['update_tokens_per_s'])} "
            f"| {_pm(m['completion_length'], 1)} | {_pm(m['reward'], 3)} |"
        )
    shares = []
    for name, row in rows.items():
        m = row["mean_std"]
        share = m["generation_s"]["mean"] / max(m["seconds"]["mean"], 1e-9)
        shares.append(f"{name} {share:.0%} generation / {1 - share:.0%} update")
    lines += ["", "Where the time goes: " + "; ".join(shares) + "."]
    return "\n".join(lines)


def write_json(results: list[dict[str, Any]], path: str | Path) -> None:
    """``results`` (one :func:`run` result per precision) as JSON at ``path``."""
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
