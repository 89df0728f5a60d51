"""Tasks from Hugging Face ``datasets`` (issue 11, item 2): objects, ``"hf:NAME[:CONFIG]"``, folders written
by ``save_to_disk``. Data sets are built with ``Dataset.from_list`` in temporary folders; nothing is
downloaded."""

import gymnasium as gym
import pytest

from lmrl_gym import TextGenEnv, TextGenVectorEnv
from lmrl_gym.tasks import resolve_task
from lmrl_gym.tasks.hf_dataset import make_dataset_task

datasets = pytest.importorskip("datasets")

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(n, start=0, list_references=False):
    out = []
    for i in range(start, start + n):
        refs = [f"answer {i}", f"reply {i}"] if list_references else f"answer {i}"
        out.append({"question": f"question {i}", "answer": refs, "label": i % 2})
    return out


QA = {"prompt_column": "question", "reference_column": "answer"}


def test_a_single_dataset_is_carved_80_10_10_with_list_references():
    data = datasets.Dataset.from_list(rows(100, list_references=True))
    task = resolve_task(data, QA)
    sizes = {s: len(task.examples(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 80, "validation": 10, "test": 10}
    prompts = [{e.prompt for e in task.examples(s)} for s in ("train", "validation", "test")]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    example = task.examples("train")[0]
    i = example.prompt.split()[1]
    assert example.references == [f"answer {i}", f"reply {i}"]
    assert resolve_task(data, QA) is task  # one data set object, one task (SyncVectorEnv of many envs)


def test_dataset_dict_splits_are_mapped_by_name_and_absent_ones_carved_from_train():
    full = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows(20)),
        dev=datasets.Dataset.from_list(rows(4, 100)),
        test=datasets.Dataset.from_list(rows(3, 200)),
        unsupervised=datasets.Dataset.from_list(rows(7, 300)),  # ignored, as IMDB's is
    )
    task = make_dataset_task(full, **QA)
    assert [len(task.examples(s)) for s in ("train", "validation", "test")] == [20, 4, 3]
    assert task.examples("validation")[0].prompt == "question 100"
    # train + test (IMDB's layout): validation is carved out of train, one ninth of it (10 % of 90 %)
    task = make_dataset_task(
        datasets.DatasetDict(train=datasets.Dataset.from_list(rows(90)), test=full["test"]), **QA
    )
    assert [len(task.examples(s)) for s in ("train", "validation", "test")] == [80, 10, 3]
    with pytest.raises(ValueError, match="no train split \\(its splits: \\['dev', 'test'\\]\\)"):
        make_dataset_task(datasets.DatasetDict(dev=full["dev"], test=full["test"]), **QA)
    with pytest.raises(ValueError, match="splits 'validation' and 'dev' both map to 'validation'"):
        make_dataset_task(
            datasets.DatasetDict(train=full["train"], validation=full["dev"], dev=full["dev"]), **QA
        )


def test_save_to_disk_folders_load_by_path_and_with_the_hf_prefix(tmp_path, hf_tokenizer_dir):
    folder = tmp_path / "qa"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows(12)), validation=datasets.Dataset.from_list(rows(3, 50))
    ).save_to_disk(folder)
    by_path = resolve_task(str(folder), QA)
    by_prefix = resolve_task(f"hf:{folder}", QA)
    assert [len(by_path.examples(s)) for s in ("train", "validation", "test")] == [
        len(by_prefix.examples(s)) for s in ("train", "validation", "test")
    ]
    assert len(by_path.examples("validation")) == 3 and by_path.examples("test")  # test carved from train
    env = gym.make("TextGen-v0", task=str(folder), task_kwargs=QA, tokenizer=str(hf_tokenizer_dir))
    obs, info = env.reset(seed=0)
    example = env.unwrapped.setup.data.examples[info["example_index"]]
    tok = env.unwrapped.tokenizer
    assert obs["prompt_ids"][: len(tok.encode(example.prompt))].tolist() == tok.encode(example.prompt)
    single = tmp_path / "single"
    datasets.Dataset.from_list(rows(10)).save_to_disk(single)
    assert len(resolve_task(single, QA).examples("train")) == 8


def test_hf_name_and_config_go_to_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, config=None):
        calls.append((name, config))
        return datasets.DatasetDict(train=datasets.Dataset.from_list(rows(10)))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = resolve_task("hf:someone/qa-set:small", QA)
    assert calls == [("someone/qa-set", "small")] and task.name == "hf:someone/qa-set:small"
    resolve_task("hf:someone/qa-set", QA)
    assert calls[-1] == ("someone/qa-set", None)
    resolve_task("hf:someone/qa-set", QA)
    assert len(calls) == 2  # loaded once per (name, config, arguments)


def test_load_dataset_errors_name_the_data_set(monkeypatch):
    def offline(name, config=None):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        ValueError, match="cannot load data set 'nobody/nothing' .*ConnectionError: no network"
    ):
        resolve_task("hf:nobody/nothing", QA)


def test_a_folder_not_written_by_save_to_disk_is_a_clear_error(tmp_path):
    with pytest.raises(
        ValueError, match="not one written by save_to_disk: for a folder of data files write 'hf:PATH'"
    ):
        resolve_task(str(tmp_path))


def test_missing_columns_are_errors_that_list_the_columns_there_are():
    data = datasets.Dataset.from_list(rows(10))
    with pytest.raises(
        ValueError, match=r"no prompt column 'prompt'; its columns: \['question', 'answer', 'label'\]"
    ):
        resolve_task(data)
    with pytest.raises(
        ValueError, match=r"no reference column 'target'; its columns: \['question', 'answer', 'label'\]"
    ):
        resolve_task(data, {"prompt_column": "question", "reference_column": "target"})
    with pytest.raises(
        ValueError, match="row 1: the references \\('answer'\\) must be a string or a non-empty list"
    ):
        resolve_task(
            datasets.Dataset.from_list([{"q": "a", "answer": ["x"]}, {"q": "b", "answer": []}]),
            {"prompt_column": "q", "reference_column": "answer"},
        )


def test_default_columns_are_prompt_and_references():
    data = datasets.Dataset.from_list([{"prompt": f"p {i}", "references": [f"r {i}"]} for i in range(10)])
    task = resolve_task(data)
    assert task.has_references and task.examples("train")[0].references[0].startswith("r ")


def test_prompt_only_data_needs_max_new_tokens_and_a_reward_without_references(hf_tokenizer_dir):
    reviews = datasets.Dataset.from_list([{"text": f"this film was {w}", "label": 1} for w in "abcdefghij"])
    kwargs = {"task": reviews, "task_kwargs": {"prompt_column": "text"}, "tokenizer": str(hf_tokenizer_dir)}

    def length(text):
        return float(len(text))

    env = TextGenEnv(reward=length, max_new_tokens=4, **kwargs)
    assert not env.task.has_references and env.setup.max_new_tokens == 4
    obs, info = env.reset(seed=0)
    for _ in range(4):
        obs, reward, terminated, _, info = env.step(env.tokenizer.encode("ok")[0])
    assert terminated and info["length_limit"] and info["references"] == [] and reward == len(info["text"])
    venv = TextGenVectorEnv(num_envs=2, reward=length, max_new_tokens=4, **kwargs)
    venv.reset(seed=0)
    with pytest.raises(
        ValueError, match="has no references \\(prompt-only data\\), so max_new_tokens has no default"
    ):
        TextGenEnv(reward=length, **kwargs)
    for reward in ("bleu", "exact_match", "lm", {"bleu": 1.0, "lm": 0.5}):
        with pytest.raises(ValueError, match="needs references, but task .* has none \\(prompt-only"):
            TextGenEnv(reward=reward, max_new_tokens=4, **kwargs)


def test_bad_rows_and_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="row 0: the prompt \\('q'\\) must be a string, got NoneType"):
        resolve_task(
            datasets.Dataset.from_list([{"q": None, "a": "x"}]),
            {"prompt_column": "q", "reference_column": "a"},
        )
    with pytest.raises(ValueError, match="streaming \\(iterable\\) data sets are not supported"):
        resolve_task(datasets.Dataset.from_list(rows(3)).to_iterable_dataset(), QA)
    with pytest.raises(
        ValueError, match=r"unknown task_kwargs \['prompt_col'\] for a data set; valid: \['prompt_column'"
    ):
        resolve_task(datasets.Dataset.from_list(rows(3)), {"prompt_col": "question"})
