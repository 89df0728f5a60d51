import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrl_gym import Tokenizer

WORDS = st.lists(st.sampled_from(["a", "b", "soixante-dix", "thousand,", "I_JUMP", "é"]), max_size=12)


@settings(max_examples=50, deadline=None)
@given(WORDS)
def test_word_level_round_trip(words):
    tok = Tokenizer.from_texts(["a b soixante-dix thousand, I_JUMP é"])
    text = " ".join(words)
    assert tok.decode(tok.encode(text)) == text


def test_char_level_round_trip_keeps_spaces():
    tok = Tokenizer.from_texts(["ab c", "ca b"], level="char")
    assert tok.encode("a b") == [tok.token_to_id["a"], tok.token_to_id[" "], tok.token_to_id["b"]]
    assert tok.decode(tok.encode("cab  a")) == "cab  a"


def test_special_ids_and_frequency_order():
    tok = Tokenizer.from_texts(["b a b", "c b a"])
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.id_to_token[4:] == ["b", "a", "c"]
    assert tok.vocab_size == 7
    assert tok.encode("b z") == [4, tok.unk_id]
    assert tok.invalid_action_ids == (0, 1, 3)


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    tok = Tokenizer.from_texts(["x y"])
    x, y = tok.encode("x y")
    assert tok.decode([tok.bos_id, x, tok.pad_id, y, tok.eos_id, x]) == "x y"
    assert tok.decode([x, tok.eos_id], skip_special=False) == "x <eos>"
    with pytest.raises(ValueError, match="token id 99 is outside the vocabulary"):
        tok.decode([99])


def test_save_and_load_round_trip(tmp_path):
    tok = Tokenizer.from_texts(["un deux trois", "deux"], level="word")
    path = tmp_path / "tok.json"
    tok.save(path)
    assert Tokenizer.load(path) == tok
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), (json.dumps({"tokens": []}), "not an lmrl_gym tokenizer file")],
)
def test_loading_a_bad_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "tok.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        Tokenizer.load(path)


def test_bad_vocabularies_and_levels_are_rejected():
    with pytest.raises(ValueError, match="unknown tokenizer level 'byte'"):
        Tokenizer.from_texts(["a"], level="byte")
    with pytest.raises(ValueError, match="must start with the special tokens"):
        Tokenizer(["a", "b"])
    with pytest.raises(ValueError, match="must not repeat"):
        Tokenizer(["<pad>", "<bos>", "<eos>", "<unk>", "a", "a"])
    with pytest.raises(TypeError, match="encode expects a str"):
        Tokenizer.from_texts(["a"]).encode(["a"])
