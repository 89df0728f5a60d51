"""The transformer models and TransformerPolicy: KV cache, teacher forcing, checkpoints, bad input."""

import gymnasium as gym
import pytest
import torch

import lmrl_gym  # noqa: F401  (registers the ids)
from agents import TransformerConfig, TransformerLM, TransformerPolicy
from agents.devices import resolve_device

ARCH_NAMES = ["causal", "seq2seq"]


def padded_batch(vocab: int, generator: torch.Generator):
    """Prompts of lengths 5, 2, 0 and 3 (right-padded with 0) and random targets."""
    lengths = torch.tensor([5, 2, 0, 3])
    prompts = torch.randint(4, vocab, (4, 5), generator=generator)
    prompts = prompts.masked_fill(torch.arange(5)[None, :] >= lengths[:, None], 0)
    targets = torch.randint(2, vocab, (4, 6), generator=generator)
    return prompts, lengths, targets


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_kv_cached_decoding_equals_the_full_forward_with_padding(arch):
    gen = torch.Generator().manual_seed(0)
    config = TransformerConfig(vocab_size=13, arch=arch, n_layer=2, n_head=2, n_embd=32, max_positions=16)
    model = TransformerLM(config).eval()
    prompts, lengths, targets = padded_batch(13, gen)
    full_logits, full_values = model(prompts, lengths, targets)
    logits, values, cache = model.start(prompts, lengths, max_new_tokens=6)
    step_logits, step_values = [logits], [values]
    for t in range(6):
        logits, values, cache = model.step(cache, targets[:, t])
        step_logits.append(logits)
        step_values.append(values)
    torch.testing.assert_close(torch.stack(step_logits, 1), full_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(step_values, 1), full_values, atol=1e-5, rtol=0)
    assert not torch.isnan(full_logits).any()


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_padding_does_not_change_a_row(arch):
    gen = torch.Generator().manual_seed(1)
    config = TransformerConfig(vocab_size=13, arch=arch, n_layer=2, n_head=2, n_embd=32, max_positions=16)
    model = TransformerLM(config).eval()
    prompts, lengths, targets = padded_batch(13, gen)
    batch_logits, _ = model(prompts, lengths, targets)
    alone, _ = model(prompts[1:2, :2], lengths[1:2], targets[1:2])
    torch.testing.assert_close(alone, batch_logits[1:2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_cache_reorder_selects_and_repeats_rows(arch):
    gen = torch.Generator().manual_seed(2)
    config = TransformerConfig(vocab_size=13, arch=arch, n_layer=1, n_head=2, n_embd=16, max_positions=16)
    model = TransformerLM(config).eval()
    prompts, lengths, targets = padded_batch(13, gen)
    _, _, cache = model.start(prompts, lengths, max_new_tokens=2)
    index = torch.tensor([3, 3, 0])
    logits, _, _ = model.step(cache.reorder(index), targets[index, 0])
    expected, _ = model(prompts[index], lengths[index], targets[index, :1])
    torch.testing.assert_close(logits, expected[:, 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_policy_sequence_scores_match_incremental_log_probs(arch):
    torch.manual_seed(0)
    env = gym.make("TextGen-Copy-v0")
    policy = TransformerPolicy.for_env(env, arch=arch, n_layer=1, n_embd=32, device="cpu")
    data = env.unwrapped.setup.data
    prompts = torch.as_tensor(data.prompts[:3], dtype=torch.long)
    tokens = torch.tensor([[4, 5, 2, 0], [6, 2, 0, 0], [7, 8, 9, 2]])
    lengths = torch.tensor([3, 2, 4])
    scores = policy.evaluate_sequences(prompts, tokens, lengths)
    logits, state = policy.start(prompts)
    expected_lp, expected_v = [], [state.values]
    for t in range(4):
        expected_lp.append(torch.log_softmax(logits, -1).gather(1, tokens[:, t : t + 1]).squeeze(1))
        logits, state = policy.step(state, tokens[:, t])
        expected_v.append(state.values)
    valid = torch.arange(4)[None, :] < lengths[:, None]
    expected_lp = torch.where(valid, torch.stack(expected_lp, 1), 0.0)
    torch.testing.assert_close(scores.log_probs, expected_lp, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        scores.values, torch.where(valid, torch.stack(expected_v[:4], 1), 0.0), atol=1e-5, rtol=0
    )
    assert torch.isfinite(scores.entropy).all() and (scores.entropy[valid] > 0).all()
    assert (scores.entropy[~valid] == 0).all()


def test_invalid_ids_get_minus_infinity_and_forward_matches_start():
    env = gym.make("TextGen-Copy-v0")
    policy = TransformerPolicy.for_env(env, n_layer=1, n_embd=32, device="cpu")
    obs, _ = env.reset(seed=0)
    batch = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
    logits, values = policy(batch)
    start_logits, state = policy.start(batch["prompt_ids"])
    torch.testing.assert_close(logits, start_logits)
    torch.testing.assert_close(values, state.values)
    for invalid in env.unwrapped.tokenizer.invalid_action_ids:
        assert logits[0, invalid] == float("-inf")
    assert torch.isfinite(logits[0, env.unwrapped.tokenizer.eos_id])


def test_save_and_load_round_trip_exactly(tmp_path):
    env = gym.make("TextGen-Reverse-v0")
    policy = TransformerPolicy.for_env(env, arch="seq2seq", n_layer=1, n_embd=32, device="cpu")
    path = tmp_path / "policy.pt"
    policy.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]  # atomic: no temporary left
    loaded = TransformerPolicy.load(path, env=env, device="cpu")
    assert loaded.config == policy.config and loaded.tokenizer == policy.tokenizer
    for a, b in zip(policy.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_loading_a_corrupt_or_truncated_or_foreign_file_is_a_clear_error(tmp_path):
    env = gym.make("TextGen-Reverse-v0")
    policy = TransformerPolicy.for_env(env, n_layer=1, n_embd=32, device="cpu")
    good = tmp_path / "policy.pt"
    policy.save(good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable policy checkpoint"):
        TransformerPolicy.load(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="not a readable policy checkpoint"):
        TransformerPolicy.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a TransformerPolicy checkpoint"):
        TransformerPolicy.load(foreign)
    with pytest.raises(ValueError, match="no policy checkpoint at"):
        TransformerPolicy.load(tmp_path / "missing.pt")


def test_checkpoint_for_another_env_is_rejected(tmp_path):
    policy = TransformerPolicy.for_env(gym.make("TextGen-Reverse-v0"), n_layer=1, n_embd=32, device="cpu")
    path = tmp_path / "policy.pt"
    policy.save(path)
    with pytest.raises(ValueError, match="tokenizer .* does not match the env"):
        TransformerPolicy.load(path, env=gym.make("TextGen-v0"))
    with pytest.raises(ValueError, match="max_new_tokens=9; the env has 8, 4"):
        TransformerPolicy.load(
            path, env=gym.make("TextGen-Reverse-v0", max_prompt_tokens=8, max_new_tokens=4)
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "rnn"}, "unknown arch 'rnn'"),
        ({"n_head": 3}, "n_head \\(3\\) must divide n_embd \\(128\\)"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"dropout": 1.5}, "dropout must be in \\[0, 1\\)"),
        ({"device": "tpu9"}, "unknown device 'tpu9'"),
    ],
)
def test_bad_policy_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerPolicy.for_env(gym.make("TextGen-Copy-v0"), **kwargs)


def test_positions_beyond_the_table_are_rejected_from_shapes():
    model = TransformerLM(TransformerConfig(vocab_size=8, max_positions=6))
    with pytest.raises(ValueError, match="exceed max_positions=6"):
        model(torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("has_bf16_units", [False, True])
def test_auto_device_and_cpu_precision(has_bf16_units, monkeypatch):
    """bf16 autocast applies on a CPU with bf16 units (AMX / AVX-512 BF16: the KV cache is bf16, scores stay
    float32 and near fp32's) and nowhere else on CPU (bit for bit fp32). Both branches run on any CPU: the
    flag check is patched; where the CPU lacks the units torch emulates bf16 (slowly, but correctly)."""
    import agents.policies.transformer as transformer_policy

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(transformer_policy, "bf16_autocast_applies", lambda device: has_bf16_units)
    torch.manual_seed(0)
    fp32 = TransformerPolicy.for_env("TextGen-Copy-v0", n_layer=1, n_embd=32, device="cpu")
    bf16 = TransformerPolicy.for_env(
        "TextGen-Copy-v0", n_layer=1, n_embd=32, device="cpu", bf16_autocast=True
    )
    bf16.load_state_dict(fp32.state_dict())
    prompts = torch.tensor([[4, 5, 6, 0, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0, 0, 0]])
    tokens, lengths = torch.tensor([[4, 5, 6, 2], [7, 2, 0, 0]]), torch.tensor([4, 2])
    logits, state = bf16.start(prompts)
    expected_logits, _ = fp32.start(prompts)
    assert logits.dtype == torch.float32
    assert state.cache.keys[0].dtype == (torch.bfloat16 if has_bf16_units else torch.float32)
    scores, expected = (
        bf16.evaluate_sequences(prompts, tokens, lengths),
        fp32.evaluate_sequences(prompts, tokens, lengths),
    )
    assert scores.log_probs.dtype == torch.float32
    if has_bf16_units:
        assert not torch.equal(logits, expected_logits)  # bf16 did run
        torch.testing.assert_close(logits, expected_logits, atol=0.05, rtol=0)
        torch.testing.assert_close(scores.log_probs, expected.log_probs, atol=0.05, rtol=0)
    else:
        assert torch.equal(logits, expected_logits) and torch.equal(scores.log_probs, expected.log_probs)


@pytest.mark.parametrize("keys", [1, 5, 14, 15, 16, 40])
def test_key_softmax_equals_softmax_at_every_width(keys):
    """Below 16 keys the CPU softmax is computed over -inf padding (torch's kernel is ~10x slower there):
    the same probabilities and gradients as the plain softmax, -inf scores (masked keys) included."""
    from agents.models.transformer import key_softmax

    torch.manual_seed(keys)
    scores = torch.randn(6, 3, keys) * 4
    scores[:, :, 0] = float("-inf") if keys > 1 else 0.0
    padded, plain = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    weights = torch.randn(6, 3, keys)
    out, expected = key_softmax(padded), plain.softmax(-1)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(padded.grad, plain.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("keys", [5, 40])
def test_key_softmax_is_float32_for_bf16_scores(keys):
    """Attention weights are a float32 softmax even of bf16 scores (as under CPU autocast, which would
    keep softmax and its backward in bf16)."""
    from agents.models.transformer import key_softmax

    scores = (torch.randn(4, 2, keys) * 3).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = key_softmax(scores)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, scores.float().softmax(-1), atol=1e-6, rtol=1e-6)


def test_heads_run_in_fp32_under_bf16_autocast():
    """Under bf16 autocast the trunk runs in bf16 but the LM and value heads in fp32, on the trunk's output:
    bf16 logits would put ~0.03 of rounding noise into every log-prob, and into PPO's ratio."""
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, max_positions=8)
    model = TransformerLM(config).eval()
    h = torch.randn(3, 5, 16).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        logits, values = model._heads(h)
    with torch.no_grad():
        trunk = model.ln_f(h.float())
        expected_logits, expected_values = model.lm_head(trunk), model.value_head(trunk).squeeze(-1)
    assert logits.dtype == values.dtype == torch.float32
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, expected_values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_the_cache_grows_past_what_start_allocated(arch):
    """``max_new_tokens`` preallocates; steps and feeds beyond it extend the cache (multi-turn feeds leave
    holes, so the columns used can exceed the tokens read) and still equal the full forward."""
    gen = torch.Generator().manual_seed(3)
    config = TransformerConfig(vocab_size=13, arch=arch, n_layer=1, n_head=2, n_embd=16, max_positions=16)
    model = TransformerLM(config).eval()
    prompts, lengths, targets = padded_batch(13, gen)
    _, _, cache = model.start(prompts, lengths, max_new_tokens=1)
    capacity = cache.capacity
    model.step(cache, targets[:, 0])
    counts = torch.tensor([3, 1, 0, 2])
    logits, _, cache = model.feed(cache, targets[:, 1:4], counts)
    assert cache.capacity > capacity and cache.length == capacity + 3
    logits, _, cache = model.step(cache, targets[:, 4])
    for row in range(4):
        sequence = torch.cat([targets[row, :1], targets[row, 1 : 1 + counts[row]], targets[row, 4:5]])
        expected, _ = model(prompts[row : row + 1], lengths[row : row + 1], sequence[None])
        torch.testing.assert_close(logits[row], expected[0, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_running_past_the_position_table_is_a_clear_error(arch):
    config = TransformerConfig(vocab_size=13, arch=arch, n_layer=1, n_head=2, n_embd=16, max_positions=8)
    model = TransformerLM(config).eval()
    prompts, lengths, targets = padded_batch(13, torch.Generator().manual_seed(4))
    _, _, cache = model.start(prompts, lengths, max_new_tokens=2)
    with pytest.raises(ValueError, match="beyond max_positions=8"):
        model.feed(cache, torch.full((4, 8), 5), torch.full((4,), 8))
    with pytest.raises(ValueError, match="beyond max_positions=8"):
        for _ in range(8):
            model.step(cache, targets[:, 0])


def test_compiled_decode_steps_equal_eager_ones(monkeypatch):
    """``compile=True`` runs ``step`` through torch.compile (dynamic shapes: rows dropped by ``select``
    do not break it): the same logits as eager decoding up to float rounding. Compiled here with dynamo's
    ``aot_eager`` backend (its tracing, guards and dynamic shapes, ~10 s), not the default inductor, whose
    C++ kernels take ~40 s to build from a cold cache; inductor's steps matched eager's to 6e-8 by hand."""
    from torch._dynamo.utils import counters

    import agents.policies.transformer as transformer_policy

    monkeypatch.setitem(transformer_policy.COMPILE_OPTIONS, "backend", "aot_eager")
    counters.clear()
    torch.manual_seed(0)
    eager = TransformerPolicy.for_env("TextGen-Copy-v0", n_layer=1, n_embd=32, device="cpu")
    compiled = TransformerPolicy.for_env("TextGen-Copy-v0", n_layer=1, n_embd=32, device="cpu", compile=True)
    compiled.load_state_dict(eager.state_dict())
    prompts = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0], [4, 4, 4, 4]])
    expected, eager_state = eager.start(prompts)
    logits, state = compiled.start(prompts)
    for step in range(5):
        if step == 3:  # drop a row, as rollouts do
            keep = torch.tensor([0, 2])
            eager_state, state = eager.select(eager_state, keep), compiled.select(state, keep)
            expected, logits = expected[keep], logits[keep]
        tokens = expected.argmax(-1)
        expected, eager_state = eager.step(eager_state, tokens)
        logits, state = compiled.step(state, tokens)
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)  # -inf where eager has it
    assert counters["stats"]["unique_graphs"] >= 1, "the steps ran eagerly: nothing was compiled"


def test_compile_flag_compiles_each_models_own_step_and_survives_a_checkpoint(tmp_path, monkeypatch):
    """Each model gets its own compiled step, made once: a frozen copy (the KL reference) must step with
    its own weights, not through the original's compiled method. ``torch.compile`` is recorded here, not
    run (the test above runs it)."""
    import agents.policies.transformer as transformer_policy

    compiled_for = []

    def fake_compile(fn, dynamic):
        assert dynamic is True
        compiled_for.append(fn.__self__)
        return fn

    monkeypatch.setattr(transformer_policy.torch, "compile", fake_compile)
    torch.manual_seed(0)
    policy = TransformerPolicy.for_env("TextGen-Copy-v0", n_layer=1, n_embd=32, device="cpu", compile=True)
    eager = TransformerPolicy.for_env("TextGen-Copy-v0", n_layer=1, n_embd=32, device="cpu")
    reference = policy.frozen_copy()
    prompts = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]])
    for each in (policy, policy, reference, eager):
        logits, state = each.start(prompts)
        each.step(state, logits.argmax(-1))
    assert compiled_for == [policy.model, reference.model]
    path = tmp_path / "policy.pt"
    policy.save(path)
    assert TransformerPolicy.load(path).compile_decoding is True
    eager.save(path)
    assert TransformerPolicy.load(path).compile_decoding is False
