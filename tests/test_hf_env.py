"""Environments on Hugging Face tokenizers (issue 11, item 1) and the SB3 render habit (item 8).

The tokenizers are the session fixtures of ``conftest.py``: byte-level BPE trained on the tasks' text,
GPT-2 flavour (``<|endoftext|>`` is bos = eos = unk, no pad) and T5 flavour (pad 0, eos 1, unk 2, no bos,
eos appended when encoding), loaded by path as a user's hub name would be.
"""

import json
import random
import shutil
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import sacrebleu
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lmrl_gym
from envs_registry import ENV_SPECS
from lmrl_gym import HFTokenizer, TextGenEnv, TextGenVectorEnv, Tokenizer
from lmrl_gym.env_setup import EnvSetup
from lmrl_gym.rewards.text_bleu import sentence_bleu_texts, tokenize_13a

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = [spec.id for spec in ENV_SPECS]
T5_LOGITS = 428  # the tiny T5's output size: 28 more than its tokenizer's 400 tokens, as hub T5s have
COPY = {"task": "copy", "task_kwargs": {"num_symbols": 6, "min_length": 2, "max_length": 4}}


def test_importing_lmrl_gym_and_playing_a_word_env_imports_neither_transformers_nor_datasets():
    code = (
        "import sys, gymnasium as gym, lmrl_gym\n"
        "env = gym.make('TextGen-Copy-v0'); env.reset(seed=0); env.step(env.unwrapped.tokenizer.eos_id)\n"
        "assert lmrl_gym.HFTokenizer.level == 'subword'\n"
        "print('transformers' in sys.modules, 'datasets' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# ------------------------------------------------------------------------------------ the tokenizer


def test_gpt2_style_tokenizer_without_pad_gets_an_env_pad_one_past_the_action_space(hf_tokenizer_dir):
    tok = HFTokenizer(hf_tokenizer_dir)
    hf = tok.hf_tokenizer
    assert hf.pad_token_id is None and hf.eos_token_id == hf.bos_token_id == hf.unk_token_id
    assert tok.vocab_size == tok.num_tokens == len(hf)
    assert tok.pad_id == tok.vocab_size  # never a real token, outside the action space
    assert tok.eos_ids == (hf.eos_token_id,) and tok.eos_id == hf.eos_token_id
    assert tok.bos_id == hf.eos_token_id and tok.unk_id is None  # its "unk" is eos, a valid action
    assert tok.invalid_action_ids == ()  # its only special token ends the text
    ids = tok.encode("three hundred and one")
    assert tok.decode(ids) == "three hundred and one"
    assert tok.decode([*ids, tok.eos_id, *ids, tok.pad_id]) == "three hundred and one"  # stops at eos
    assert tok.decode([*ids, tok.eos_id], skip_special=False) == "three hundred and one<|endoftext|>"
    with pytest.raises(ValueError, match=r"token id 401 is outside the tokenizer's ids \[0, 400\)"):
        tok.decode([401])


def test_t5_style_tokenizer_encodes_without_eos_and_masks_specials_and_extra_logits(hf_t5_tokenizer_dir):
    tok = HFTokenizer(hf_t5_tokenizer_dir, num_actions=T5_LOGITS)
    hf = tok.hf_tokenizer
    assert hf("one two")["input_ids"][-1] == hf.eos_token_id  # its post-processor appends eos ...
    assert tok.encode("one two") == hf("one two", add_special_tokens=False)["input_ids"]  # ... ours does not
    assert tok.eos_id not in tok.encode("one two")
    assert (tok.vocab_size, tok.num_tokens, tok.pad_id) == (T5_LOGITS, 400, T5_LOGITS)
    assert tok.eos_ids == (1,) and tok.bos_id == 1 and tok.unk_id == 2
    assert tok.invalid_action_ids == (0, 2, *range(400, T5_LOGITS))  # pad, unk, the undecodable ids
    env = TextGenEnv(tokenizer=hf_t5_tokenizer_dir, num_actions=T5_LOGITS, **COPY)
    assert env.action_space == gym.spaces.Discrete(T5_LOGITS)
    mask = env.action_masks()
    assert mask.shape == (T5_LOGITS,) and not mask[[0, 2, 400, 427]].any() and mask[[1, 3, 399]].all()


def test_tokenizer_object_string_and_saved_settings_give_equal_tokenizers(hf_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    by_path = HFTokenizer(hf_tokenizer_dir)
    by_object = HFTokenizer(AutoTokenizer.from_pretrained(hf_tokenizer_dir))
    assert by_path == by_object and hash(by_path) == hash(by_object)
    assert by_path != HFTokenizer(hf_tokenizer_dir, num_actions=401)
    wide = HFTokenizer(hf_tokenizer_dir, num_actions=404, eos_token_ids=["Ġ3"])
    wide.save_pretrained(tmp_path / "saved")
    again = HFTokenizer.from_pretrained(tmp_path / "saved")
    assert again == wide and (again.vocab_size, again.eos_ids) == (404, wide.eos_ids)
    # A checkpoint that embeds its tokenizer (a reward network, a policy) reads either kind back.
    assert Tokenizer.from_dict(json.loads(json.dumps(wide.to_dict()))) == wide


def test_env_on_tokenizer_object_string_and_through_make_vec(hf_tokenizer_dir):
    from transformers import AutoTokenizer

    env = gym.make("TextGen-Copy-v0", tokenizer=AutoTokenizer.from_pretrained(hf_tokenizer_dir))
    tok = env.unwrapped.tokenizer
    assert isinstance(tok, HFTokenizer) and tok == HFTokenizer(hf_tokenizer_dir)
    venv = gym.make_vec("TextGen-Copy-v0", num_envs=3, tokenizer=str(hf_tokenizer_dir))
    assert isinstance(venv.unwrapped, TextGenVectorEnv)
    assert venv.single_observation_space == env.observation_space
    assert venv.single_action_space == gym.spaces.Discrete(len(tok.hf_tokenizer))
    # prompts and references are encoded with the Hugging Face tokenizer
    data = env.unwrapped.setup.data
    example = data.examples[0]
    assert data.prompts[0, : data.prompt_lengths[0]].tolist() == tok.encode(example.prompt)
    assert data.references[0, 0, : data.reference_lengths[0, 0]].tolist() == tok.encode(example.references[0])


def test_prompt_lengths_are_exact_even_when_a_prompt_contains_eos(hf_tokenizer_dir):
    # eos-as-pad would make these prompts look shorter; the env's own pad id cannot occur in text.
    examples = {
        "train": [("one <|endoftext|> two", "un deux"), ("<|endoftext|>", "rien"), ("three", "trois")],
        "validation": [],
        "test": [],
    }
    env = TextGenEnv(task=examples, tokenizer=hf_tokenizer_dir)
    tok = env.tokenizer
    for index, example in enumerate(env.setup.data.examples):
        obs, _ = env.reset(options={"index": index})
        expected = tok.encode(example.prompt)
        assert (
            (obs["prompt_ids"] != tok.pad_id).sum() == len(expected) == env.setup.data.prompt_lengths[index]
        )
        assert obs["prompt_ids"][: len(expected)].tolist() == expected
    assert tok.eos_id in env.setup.data.prompts[0]
    obs, *_ = env.step(tok.encode(" un")[0])
    assert (obs["prefix_ids"] != tok.pad_id).sum() == 1
    obs, _, terminated, _, info = env.step(tok.eos_id)
    assert terminated and (obs["prefix_ids"] != tok.pad_id).sum() == 2 and obs["prefix_ids"][1] == tok.eos_id


def test_generation_config_and_eos_token_ids_add_ids_that_end_the_episode(hf_tokenizer_dir, tmp_path):
    folder = tmp_path / "chat_model"
    shutil.copytree(hf_tokenizer_dir, folder)
    plain = HFTokenizer(folder)
    stop = plain.encode("trois")[0]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [plain.eos_id, stop]}))
    env = TextGenEnv(tokenizer=str(folder), **COPY)
    assert env.tokenizer.eos_ids == (plain.eos_id, stop)
    assert env.action_masks()[[plain.eos_id, stop]].all()
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(stop)
    assert terminated and info["text"] == "" and not info["invalid_action"]
    # eos_token_ids: ids or token strings (a chat model's end-of-turn token, for now a parameter)
    env = TextGenEnv(tokenizer=hf_tokenizer_dir, eos_token_ids=["Ġ3", 7], **COPY)
    assert env.tokenizer.eos_ids == (plain.eos_id, plain.hf_tokenizer.convert_tokens_to_ids("Ġ3"), 7)
    with pytest.raises(ValueError, match="eos token 'no-such-token' is not in the tokenizer's vocabulary"):
        TextGenEnv(tokenizer=hf_tokenizer_dir, eos_token_ids=["no-such-token"], **COPY)


def test_chat_template_wraps_each_prompt(hf_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    hf.chat_template = (
        "{% for m in messages %}<|endoftext|>user: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    env = TextGenEnv(tokenizer=hf, chat_template=True, **COPY)
    plain = TextGenEnv(tokenizer=hf, **COPY)
    tok = env.tokenizer
    example = env.setup.data.examples[0]
    wrapped = f"<|endoftext|>user: {example.prompt}\nassistant:"
    obs, _ = env.reset(options={"index": 0})
    assert obs["prompt_ids"][: env.setup.data.prompt_lengths[0]].tolist() == tok.encode(wrapped)
    assert obs["prompt_ids"][0] == tok.eos_id  # the template's special token is read as that token
    assert env.setup.max_prompt_tokens > plain.setup.max_prompt_tokens  # the default counts the template
    assert env.setup.kwargs["chat_template"] is True  # evaluation rebuilds the same env on another split


def test_text_rewards_get_the_decoded_text(hf_tokenizer_dir):
    seen = []

    def reward(text, references, prompt):
        seen.append((text, references, prompt))
        return float(text == references[0])

    env = TextGenEnv(reward=reward, tokenizer=hf_tokenizer_dir, **COPY)
    obs, info = env.reset(seed=3)
    example = env.setup.data.examples[info["example_index"]]
    for token in env.tokenizer.encode(example.references[0]):
        env.step(token)
    _, r, terminated, _, info = env.step(env.tokenizer.eos_id)
    assert terminated and r == 1.0 and seen == [(example.references[0], example.references, example.prompt)]
    assert info["text"] == example.references[0]


def test_evaluation_can_rebuild_the_env_on_another_split(hf_t5_tokenizer_dir):
    env = TextGenEnv(tokenizer=hf_t5_tokenizer_dir, num_actions=T5_LOGITS, **COPY)
    other = EnvSetup(split="test", **env.setup.kwargs)
    assert other.tokenizer is env.tokenizer and other.max_prompt_tokens == env.setup.max_prompt_tokens
    assert (
        other.data.prompts.max() <= T5_LOGITS
        and env.setup.encoded("test").prompts.shape == other.data.prompts.shape
    )


# ------------------------------------------------------------------------------ registry and checkers


@pytest.mark.parametrize("env_id", IDS)
def test_every_id_passes_gymnasium_and_sb3_check_env_with_a_bpe_tokenizer(env_id, hf_tokenizer_dir):
    env = gym.make(env_id, tokenizer=str(hf_tokenizer_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)  # also makes and renders the env in each declared render mode
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught] == []


def test_t5_style_tokenizer_with_extra_logits_passes_both_checkers(hf_t5_tokenizer_dir):
    env = gym.make("TextGen-Reverse-v0", tokenizer=str(hf_t5_tokenizer_dir), num_actions=T5_LOGITS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught] == []


VECTOR_CASES = [
    pytest.param({"task": "copy", "reward": "bleu"}, "gpt2", 1000, id="copy-text-bleu-gpt2"),
    pytest.param(
        {"task": "numbers", "reward": {"bleu": 1.0, "lm": 0.1}, "num_actions": T5_LOGITS},
        "t5",
        1000,
        id="numbers-mixed-t5",
    ),
    pytest.param(
        {"task": "reverse", "reward": "exact_match", "max_new_tokens": 5, "eos_token_ids": ["Ġ3"]},
        "gpt2",
        1000,
        id="reverse-two-eos-length-limit",
    ),
    # Shaping scores every row's text at every step (one text BLEU per env per step): fewer steps.
    pytest.param({"task": "copy", "reward": "bleu", "shaping": True}, "t5", 300, id="copy-shaped-t5"),
]


@pytest.mark.parametrize(("kwargs", "flavour", "steps"), VECTOR_CASES)
def test_vector_env_equals_sync_vector_env_over_1000_random_valid_steps(
    kwargs, flavour, steps, hf_tokenizer_dir, hf_t5_tokenizer_dir
):
    folder = str(hf_tokenizer_dir if flavour == "gpt2" else hf_t5_tokenizer_dir)
    n = 4
    sync = SyncVectorEnv(
        [lambda i=i: TextGenEnv(env_index=i, num_envs=n, tokenizer=folder, **kwargs) for i in range(n)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    native = TextGenVectorEnv(num_envs=n, tokenizer=folder, **kwargs)
    obs_s, _ = sync.reset(seed=5)
    obs_n, _ = native.reset(seed=5)
    for key in obs_s:
        np.testing.assert_array_equal(obs_s[key], obs_n[key])
    rng = np.random.default_rng(0)
    valid = np.flatnonzero(native.action_masks()[0])
    eos_ids = np.array(native.tokenizer.eos_ids)
    ended = 0
    for _ in range(steps):
        actions = rng.choice(valid, size=n)
        ending = rng.random(n) < 0.15  # end episodes often enough to exercise autoreset
        actions[ending] = rng.choice(eos_ids, size=int(ending.sum()))
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(actions)
        obs_n, rew_n, term_n, trunc_n, info_n = native.step(actions)
        for key in obs_s:
            np.testing.assert_array_equal(obs_s[key], obs_n[key])
        np.testing.assert_array_equal(rew_s, rew_n)  # exact, not approximate
        np.testing.assert_array_equal(term_s, term_n)
        np.testing.assert_array_equal(trunc_s, trunc_n)
        if "final_obs" in info_s:
            mask = info_s["_final_obs"]
            np.testing.assert_array_equal(mask, info_n["_final_obs"])
            for key in ("text", "length_limit", "invalid_action"):
                np.testing.assert_array_equal(
                    info_s["final_info"][key][mask], info_n["final_info"][key][mask]
                )
            ended += int(mask.sum())
    assert ended > steps // 10


# ---------------------------------------------------------------------------------------- text BLEU


def test_text_bleu_equals_sacrebleu_on_1000_random_decoded_pairs(hf_tokenizer_dir):
    tok = HFTokenizer(hf_tokenizer_dir)
    rng = random.Random(0)
    texts = [t for t in lmrl_gym.make_task("numbers").examples("train")[:300] for t in t.references]
    texts += [e.prompt for e in lmrl_gym.make_task("scan").examples("train")[:100]]

    def edited(text: str) -> str:
        """Decoded ids of ``text`` with random token edits, sometimes random ids (broken UTF-8, symbols)."""
        ids = tok.encode(text)
        for _ in range(rng.randint(0, 4)):
            op, k = rng.random(), rng.randrange(len(ids) + 1)
            if op < 0.4 and ids:
                del ids[min(k, len(ids) - 1)]
            else:
                ids.insert(k, rng.randrange(1, tok.num_tokens))
        return tok.decode(ids)

    hyps, refs = [], []
    for _ in range(1000):
        base = rng.choice(texts)  # mostly a hypothesis and references of one text, so that n-grams match
        hyps.append(edited(base if rng.random() < 0.8 else rng.choice(texts)) if rng.random() < 0.95 else "")
        refs.append(
            [edited(base if rng.random() < 0.7 else rng.choice(texts)) for _ in range(rng.randint(1, 3))]
        )
    ours = sentence_bleu_texts(hyps, refs).tolist()
    theirs = [sacrebleu.sentence_bleu(h, r).score for h, r in zip(hyps, refs, strict=True)]
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= 1e-9
    assert sum(t > 0 for t in theirs) > 400 and sum(t > 99.99 for t in theirs) > 10  # not all trivial


def test_13a_words_equal_sacrebleus_tokenizer_on_punctuation_digits_entities_and_newlines():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    reference = Tokenizer13a()
    rng = random.Random(1)
    pieces = [
        *"ab1.,-'\"&;<>/()[]{}~`^_|@?!#$%*+:= \n\t\xa0é٣",
        "&quot;",
        "&amp;",
        "&lt;",
        "<skipped>",
        "-\n",
        "3.5",
    ]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert tokenize_13a(text) == tuple(reference(text.rstrip()).split()), repr(text)


def test_bleu_reward_on_a_bpe_tokenizer_is_sacrebleu_on_the_decoded_text(hf_tokenizer_dir):
    env = TextGenEnv(task="numbers", tokenizer=hf_tokenizer_dir)
    assert env.setup.reward.signature.startswith("BLEU(tokens=13a")
    word_env = TextGenEnv(task="numbers")
    assert word_env.setup.reward.signature.startswith("BLEU(tokens=ids")  # id BLEU stays for words
    index = next(i for i, e in enumerate(env.setup.data.examples) if len(e.references[0].split()) >= 5)
    env.reset(options={"index": index})
    example = env.setup.data.examples[index]
    for token in env.tokenizer.encode(example.references[0].rsplit(" ", 1)[0]):  # all words but the last
        env.step(token)
    _, reward, terminated, _, info = env.step(env.tokenizer.eos_id)
    expected = sacrebleu.sentence_bleu(info["text"], example.references).score / 100
    assert terminated and 0 < reward < 1 and reward == pytest.approx(expected, abs=1e-11)


def test_exact_match_on_a_bpe_tokenizer_compares_texts_not_id_sequences(hf_tokenizer_dir):
    env = TextGenEnv(task="numbers", reward="exact_match", tokenizer=hf_tokenizer_dir, max_new_tokens=80)
    _, info = env.reset(seed=2)
    reference = env.setup.data.examples[info["example_index"]].references[0]
    by_character = [env.tokenizer.encode(c)[0] for c in reference]  # not the tokenizer's own segmentation
    assert by_character != env.tokenizer.encode(reference)
    for token in by_character:
        env.step(token)
    _, reward, terminated, _, info = env.step(env.tokenizer.eos_id)
    assert terminated and info["text"] == reference and reward == 1.0


# ------------------------------------------------------------------------------------------ bad input


def test_tokenizer_without_eos_is_an_error(hf_t5_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_t5_tokenizer_dir)
    hf.eos_token = None
    with pytest.raises(ValueError, match="has no eos token .* pass eos_token_ids"):
        gym.make("TextGen-Copy-v0", tokenizer=hf)


def test_num_actions_smaller_than_the_tokenizer_is_an_error(hf_tokenizer_dir):
    with pytest.raises(ValueError, match=r"num_actions=399 is smaller than the tokenizer \(400 tokens\)"):
        gym.make("TextGen-Copy-v0", tokenizer=str(hf_tokenizer_dir), num_actions=399)
    with pytest.raises(ValueError, match="num_actions must be an integer"):
        TextGenVectorEnv(task="copy", tokenizer=str(hf_tokenizer_dir), num_actions=400.0)


def test_long_prompts_with_a_bpe_tokenizer_truncate_with_a_warning_or_fail_when_strict(hf_tokenizer_dir):
    with pytest.warns(UserWarning, match="longer than max_prompt_tokens=3; they keep their first"):
        env = TextGenEnv(task="numbers", tokenizer=hf_tokenizer_dir, max_prompt_tokens=3)
    obs, info = env.reset(seed=0)
    full = env.tokenizer.encode(env.setup.data.examples[info["example_index"]].prompt)
    assert obs["prompt_ids"].tolist() == full[:3]
    with pytest.raises(ValueError, match="longer than max_prompt_tokens=3 .*strict_prompt_length=True"):
        TextGenVectorEnv(
            task="numbers", tokenizer=hf_tokenizer_dir, max_prompt_tokens=3, strict_prompt_length=True
        )


def test_model_max_length_caps_the_prompt_width(hf_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    hf.model_max_length = 4  # the model's input positions, as hub tokenizers declare them
    with pytest.warns(UserWarning, match="longer than max_prompt_tokens=4"):
        env = TextGenEnv(task="numbers", tokenizer=hf)
    assert env.setup.max_prompt_tokens == 4
    with pytest.raises(ValueError, match="max_prompt_tokens=6 exceeds the tokenizer's model_max_length=4"):
        TextGenEnv(task="numbers", tokenizer=hf, max_prompt_tokens=6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chat_template": True}, "chat_template=True needs a Hugging Face tokenizer"),
        ({"num_actions": 500}, "num_actions and eos_token_ids apply to a Hugging Face tokenizer"),
        ({"tokenizer": Tokenizer.from_texts(["a b"])}, "tokenizer= takes a Hugging Face tokenizer"),
        ({"tokenizer": 3}, "tokenizer must be a transformers.PreTrainedTokenizerBase"),
        ({"tokenizer": "/no/such/folder"}, "cannot load a tokenizer from '/no/such/folder'"),
        ({"chat_template": "yes"}, "chat_template must be True or False"),
    ],
)
def test_bad_tokenizer_arguments_are_clear_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TextGenEnv(task="copy", **kwargs)


def test_chat_template_on_a_tokenizer_without_one_is_an_error(hf_tokenizer_dir):
    with pytest.raises(ValueError, match="chat_template=True, but tokenizer .* has no chat template"):
        TextGenEnv(task="copy", tokenizer=str(hf_tokenizer_dir), chat_template=True)


# ------------------------------------------------------------------------ rendering and SB3's habit


def test_rgb_array_render_draws_the_ansi_text(hf_tokenizer_dir):
    env = gym.make("TextGen-Copy-v0", tokenizer=str(hf_tokenizer_dir), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
    assert (frame < 128).any() and (frame == 255).mean() > 0.8  # dark text on white
    env.step(env.unwrapped.tokenizer.encode("$x^2$ &")[0])  # text, never parsed as mathtext
    assert env.render().shape == frame.shape  # one frame size for the whole episode (video recorders)
    ansi = gym.make("TextGen-Copy-v0", tokenizer=str(hf_tokenizer_dir), render_mode="ansi")
    ansi.reset(seed=0)
    assert ansi.render().startswith("prompt:")


def test_sb3_ppo_learns_from_a_plain_id_string():
    from stable_baselines3 import PPO

    # SB3 makes the env with gym.make(id, render_mode="rgb_array"), which the env used to reject.
    model = PPO("MultiInputPolicy", "TextGen-Copy-v0", n_steps=64, batch_size=32, n_epochs=1, seed=0)
    assert model.env.get_attr("render_mode") == ["rgb_array"]
    model.learn(64)
    assert model.num_timesteps == 64
