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
