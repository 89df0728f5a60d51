"""HFPolicy: a transformers model behind the Policy protocol.

KV-cached decoding is checked against an independent reference: each row run alone, unpadded, through the
model's plain forward (no cache, no mask, default positions), as a user would call it.
"""

import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from agents.decoding import beam_search  # noqa: E402
from agents.policies.base import Policy, check_policy  # noqa: E402
from agents.policies.hf import HFPolicy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["one two three", "twenty", "a b c d e f"]


def right_padded(policy, texts):
    tok = policy.tokenizer
    encoded = [tok.encode(t) for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(texts), width), tok.pad_id, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
    return ids, torch.tensor([len(e) for e in encoded])


def reference_logits(policy, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Next-token logits after ``prompt + tokens``, one row alone through the model's plain forward."""
    model = policy.model
    with torch.no_grad():
        if policy.is_encoder_decoder:
            encoder = prompt + ([policy.tokenizer.eos_id] if policy.append_eos_to_encoder else [])
            decoder = [policy.decoder_start_id, *tokens]
            out = model(input_ids=torch.tensor([encoder]), decoder_input_ids=torch.tensor([decoder]))
        else:
            ids = ([policy.bos_id] if policy.prepend_bos else []) + prompt + tokens
            out = model(input_ids=torch.tensor([ids]))
    logits = out.logits[0, -1].float()
    return logits.masked_fill(policy.invalid_ids_mask, float("-inf"))


@pytest.fixture(scope="module", params=["gpt2", "t5"])
def policy(request, hf_gpt2_dir, hf_t5_dir):
    folder = hf_gpt2_dir if request.param == "gpt2" else hf_t5_dir
    torch.manual_seed(0)
    return HFPolicy.from_pretrained(folder, device="cpu").eval()


def assert_close_where_finite(a, b, atol=1e-5):
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    finite = torch.isfinite(a)
    torch.testing.assert_close(a[finite], b[finite], atol=atol, rtol=0)


def test_implements_the_policy_protocol(policy):
    assert isinstance(policy, Policy)
    check_policy(policy)
    assert policy.vocab_size == policy.model.get_output_embeddings().out_features
    if policy.is_encoder_decoder:  # T5: 28 logits beyond the tokenizer, never generated
        assert set(range(policy.tokenizer.num_tokens, policy.vocab_size)) <= set(policy.invalid_ids)


def test_cached_decoding_equals_the_plain_forward_with_prompts_of_different_lengths(policy):
    ids, lengths = right_padded(policy, PROMPTS)
    rng = np.random.default_rng(0)
    steps = [rng.integers(3, 300, size=len(PROMPTS)).tolist() for _ in range(4)]
    with torch.no_grad():
        logits, state = policy.start(ids, lengths)
        written = [[] for _ in PROMPTS]
        for step in [None, *steps]:
            if step is not None:
                logits, state = policy.step(state, torch.tensor(step))
                for row, token in enumerate(step):
                    written[row].append(token)
            for row, text in enumerate(PROMPTS):
                expected = reference_logits(policy, policy.tokenizer.encode(text), written[row])
                assert_close_where_finite(logits[row], expected)


def test_ragged_feed_and_select_keep_the_cache_exact(policy):
    ids, lengths = right_padded(policy, PROMPTS)
    with torch.no_grad():
        logits, state = policy.start(ids, lengths)
        forced, counts = torch.tensor([[5, 6, 7], [8, 0, 0], [0, 0, 0]]), torch.tensor([3, 1, 0])
        before = logits.clone()
        logits, state = policy.feed(state, forced, counts)
        written = [forced[row, : counts[row]].tolist() for row in range(3)]
        for row, text in enumerate(PROMPTS):
            expected = reference_logits(policy, policy.tokenizer.encode(text), written[row])
            assert_close_where_finite(logits[row], expected)
        assert torch.equal(logits[2], before[2])  # a row given no tokens keeps its logits
        state = policy.select(state, torch.tensor([0, 2]))
        logits, state = policy.step(state, torch.tensor([11, 12]))
        for row, original in enumerate([0, 2]):
            expected = reference_logits(
                policy, policy.tokenizer.encode(PROMPTS[original]), [*written[original], [11, 12][row]]
            )
            assert_close_where_finite(logits[row], expected)


def test_feed_of_one_token_equals_step(policy):
    ids, lengths = right_padded(policy, PROMPTS)
    with torch.no_grad():
        _, a = policy.start(ids, lengths)
        _, b = policy.start(ids, lengths)
        step_logits, _ = policy.step(a, torch.tensor([5, 6, 7]))
        feed_logits, _ = policy.feed(b, torch.tensor([[5], [6], [7]]), torch.ones(3, dtype=torch.long))
    assert torch.equal(step_logits, feed_logits)


def test_evaluate_sequences_matches_the_decoding_path(policy):
    """The update's teacher-forced log-probs and values equal what the rollout computed step by step."""
    ids, lengths = right_padded(policy, PROMPTS)
    actions = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [11, 0, 0, 0]])
    counts = torch.tensor([4, 2, 1])
    with torch.no_grad():
        logits, state = policy.start(ids, lengths)
        step_log_probs, step_values = [], []
        for t in range(4):
            step_log_probs.append(torch.log_softmax(logits, -1).gather(1, actions[:, t : t + 1]).squeeze(1))
            step_values.append(state.values)
            logits, state = policy.step(state, actions[:, t])
        scores = policy.evaluate_sequences(ids, actions, counts, lengths)
    valid = torch.arange(4)[None, :] < counts[:, None]
    torch.testing.assert_close(
        scores.log_probs[valid], torch.stack(step_log_probs, 1)[valid], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(scores.values[valid], torch.stack(step_values, 1)[valid], atol=1e-5, rtol=0)
    assert (scores.log_probs[~valid] == 0).all() and (scores.entropy[valid] > 0).all()
    agent = torch.tensor([[True, False, True, True]] * 3)
    masked = policy.evaluate_sequences(ids, actions, counts, lengths, agent_mask=agent)
    assert (masked.log_probs[:, 1] == 0).all()
    torch.testing.assert_close(masked.log_probs[:, 2:], scores.log_probs[:, 2:])
    hidden = policy.hidden_states(ids, actions, counts, lengths)
    assert hidden.shape == (3, 4, policy.value_head.in_features)
    torch.testing.assert_close(policy._value(hidden)[valid], scores.values[valid], atol=1e-6, rtol=0)


def test_save_and_load_round_trip(policy, tmp_path):
    with torch.no_grad():
        policy.value_head.weight.normal_()
    policy.save(tmp_path / "policy")
    loaded = HFPolicy.load(tmp_path / "policy", device="cpu").eval()
    assert torch.equal(loaded.value_head.weight, policy.value_head.weight)
    assert loaded.tokenizer == policy.tokenizer
    ids, lengths = right_padded(policy, PROMPTS)
    with torch.no_grad():
        a, sa = policy.start(ids, lengths)
        b, sb = loaded.start(ids, lengths)
    assert torch.equal(a, b) and torch.equal(sa.values, sb.values)
    policy.save(tmp_path / "policy")  # overwriting a checkpoint folder works (swapped in, not merged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_not_a_checkpoint_folder_is_a_clear_error(tmp_path, hf_gpt2_dir):
    with pytest.raises(ValueError, match="not an HFPolicy checkpoint folder"):
        HFPolicy.load(tmp_path)
    with pytest.raises(ValueError, match="not an HFPolicy checkpoint folder"):
        HFPolicy.load(hf_gpt2_dir)  # a plain transformers model: from_pretrained is the way in


def test_a_model_with_fewer_logits_than_tokens_is_rejected(hf_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

    tokenizer = AutoTokenizer.from_pretrained(hf_gpt2_dir)
    config = GPT2Config(
        vocab_size=len(tokenizer) - 10, n_layer=1, n_embd=16, n_head=2, bos_token_id=0, eos_token_id=0
    )
    small = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match="390 output logits but its tokenizer has 400 tokens"):
        HFPolicy(small, tokenizer, device="cpu")


def word_level_gpt2(tmp_path, words=("a", "b", "c")):
    """A GPT-2 over a 5-token word-level vocabulary (eos, unk and three words): small enough to enumerate."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(3)
    config = GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=16, n_layer=1, n_head=2, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # a sharper distribution than the random init, so the search has something to find
        model.lm_head.weight.mul_(20)
    return HFPolicy(model, tokenizer, device="cpu").eval()


def test_beam_search_over_hf_policy_finds_the_exhaustive_optimum(tmp_path):
    policy = word_level_gpt2(tmp_path)
    tok = policy.tokenizer
    ids, lengths = right_padded(policy, ["a b", "c"])
    max_new = 3
    with torch.no_grad():
        valid = [i for i in range(policy.vocab_size) if i not in policy.invalid_ids]
        out = beam_search(
            policy, ids, lengths, beam_size=len(valid) ** max_new, max_new_tokens=max_new, eos_id=tok.eos_id,
            pad_id=tok.pad_id, length_penalty=0.0, invalid_ids=policy.invalid_ids,
        )  # fmt: skip
        for row in range(2):
            best, best_score = None, -float("inf")
            # Every finished sequence (ending in eos) and every unfinished one of max_new tokens.
            for n in range(1, max_new + 1):
                for seq in itertools.product(valid, repeat=n):
                    if tok.eos_id in seq[:-1] or (n < max_new and seq[-1] != tok.eos_id):
                        continue
                    score = (
                        policy.evaluate_sequences(
                            ids[row : row + 1], torch.tensor([seq]), torch.tensor([n]), lengths[row : row + 1]
                        )
                        .log_probs.sum()
                        .item()
                    )
                    if score > best_score:
                        best, best_score = seq, score
            found = out.tokens[row, 0, : int(out.lengths[row, 0])].tolist()
            expected = [t for t in best if t != tok.eos_id]
            assert found == expected, (row, found, best, best_score)


def test_episodes_longer_than_the_models_positions_are_a_clear_error(hf_gpt2_dir):
    """The tiny GPT-2 has 128 learned positions: an env whose prompt + new tokens need more is refused when
    the policy meets it (and a shorter max_prompt_tokens is the way out: longer prompts are then cut)."""
    import gymnasium as gym

    import lmrl_gym  # noqa: F401

    policy = HFPolicy.from_pretrained(hf_gpt2_dir, device="cpu")
    too_long = gym.make(
        "TextGen-Copy-v0", tokenizer=str(hf_gpt2_dir), max_prompt_tokens=100, max_new_tokens=40
    )
    with pytest.raises(ValueError, match="need 140 positions .* but the model has 128"):
        policy.check_env(too_long)
    with pytest.warns(UserWarning, match="longer than max_prompt_tokens"):
        fits = gym.make("TextGen-Copy-v0", tokenizer=str(hf_gpt2_dir), max_prompt_tokens=4, max_new_tokens=40)
    policy.check_env(fits)


def test_ragged_feed_on_a_decoder_with_absolute_positions_is_refused(hf_t5_tokenizer_dir):
    """BART's decoder takes one position per column for all rows: a hole would shift a row's positions, so
    rows given different counts are refused (equal counts still work)."""
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(hf_t5_tokenizer_dir)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    bart = HFPolicy(BartForConditionalGeneration(config), tokenizer, device="cpu").eval()
    ids, lengths = right_padded(bart, PROMPTS)
    with torch.no_grad():
        _, state = bart.start(ids, lengths)
        logits, state = bart.feed(state, torch.tensor([[5, 6], [7, 8], [9, 10]]), torch.tensor([2, 2, 2]))
        for row, text in enumerate(PROMPTS):
            expected = reference_logits(bart, bart.tokenizer.encode(text), [[5, 6], [7, 8], [9, 10]][row])
            assert_close_where_finite(logits[row], expected)
        with pytest.raises(
            ValueError, match=r"BartForConditionalGeneration.*same number of tokens.*\[2, 1, 0\]"
        ):
            bart.feed(state, torch.tensor([[5, 6], [7, 0], [0, 0]]), torch.tensor([2, 1, 0]))
