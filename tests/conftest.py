import warnings

import pytest
import torch


@pytest.fixture
def warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.fixture
def one_thread():
    """Tiny models and tensors: on a busy 2-core machine a second intra-op thread only adds
    synchronisation (it made some files 5-10x slower). Restored afterwards so other tests are unaffected.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- Hugging Face assets (tests/hf_assets.py)
# Built once per session into a temporary folder and loaded by path, as a user's hub name would be.


@pytest.fixture(scope="session")
def hf_tokenizer_dir(tmp_path_factory):
    """A GPT-2-style byte-level BPE tokenizer (eos = bos = unk, no pad token), saved with save_pretrained."""
    from hf_assets import build_bpe_tokenizer

    return build_bpe_tokenizer(tmp_path_factory.mktemp("hf_tokenizer"), "gpt2")


@pytest.fixture(scope="session")
def hf_t5_tokenizer_dir(tmp_path_factory):
    """A T5-style byte-level BPE tokenizer (pad 0, eos 1, unk 2, no bos)."""
    from hf_assets import build_bpe_tokenizer

    return build_bpe_tokenizer(tmp_path_factory.mktemp("hf_t5_tokenizer"), "t5")


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 (2 layers x 64) with the GPT-2-style tokenizer in the same folder."""
    from hf_assets import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("hf_gpt2"))


@pytest.fixture(scope="session")
def hf_t5_dir(tmp_path_factory):
    """A tiny T5 (2 + 2 layers x 64) with the T5-style tokenizer; 28 more logits than tokens."""
    from hf_assets import build_t5

    return build_t5(tmp_path_factory.mktemp("hf_t5"))


@pytest.fixture(scope="session")
def hf_classifier_dir(tmp_path_factory):
    """A tiny sequence classifier with labels NEGATIVE (0) / POSITIVE (1) and its own tokenizer."""
    from hf_assets import build_classifier

    return build_classifier(tmp_path_factory.mktemp("hf_classifier"))
