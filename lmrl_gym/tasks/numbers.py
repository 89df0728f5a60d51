"""Translate numbers written in words from one language to another (data from ``num2words``)."""

from __future__ import annotations

from num2words import CONVERTER_CLASSES, num2words

from lmrl_gym.tasks.algorithmic import check_int
from lmrl_gym.tasks.base import Example, Task, split_by_hash

FRACTIONS = (0.8, 0.1, 0.1)


def _check_lang(name: str, lang: object) -> str:
    if not isinstance(lang, str) or lang not in CONVERTER_CLASSES:
        codes = sorted(CONVERTER_CLASSES)
        hint = ", ".join(repr(c) for c in ("en", "fr", "de", "es", "it") if c in CONVERTER_CLASSES)
        raise ValueError(
            f"{name} must be a language code num2words supports (e.g. {hint}; {len(codes)} in all: "
            f"num2words.CONVERTER_CLASSES), got {lang!r}"
        )
    return lang


def _spell(n: int, lang: str, max_number: int) -> str:
    try:
        text = num2words(n, lang=lang)
    except Exception as err:  # num2words raises assorted errors for numbers a language lacks
        raise ValueError(
            f"num2words cannot spell {n} in language {lang!r} ({type(err).__name__}: {err}); "
            f"max_number={max_number} is too large for it, use a max_number below {n}"
        ) from err
    # One space between words, as the word-level tokenizer decodes (a few languages emit extra spaces).
    return " ".join(text.split())


def make_numbers_task(
    target_lang: str = "fr", source_lang: str = "en", max_number: int = 9999, seed: int = 0
) -> Task:
    """Translate a number spelled out in one language into another.

    ## Description

    Word level: a token is a whitespace-separated word of ``num2words`` output, so hyphenated and
    punctuated words stay one token (``"seventy-one"``, ``"thousand,"``). For every integer ``n`` in
    ``0 .. max_number`` the prompt is ``num2words(n, lang=source_lang)`` and the single reference is
    ``num2words(n, lang=target_lang)``, both with runs of whitespace collapsed to one space.

    Example (``en`` -> ``fr``): prompt ``"seventy-one"``, reference ``"soixante et onze"``.

    If two numbers spell the same in the source language their examples are merged into one with both
    references (with num2words 0.5.14 this happens in no language for numbers up to 9999).

    ## Splits

    The ``max_number + 1`` numbers are carved 80% / 10% / 10% into train / validation / test by a seeded
    hash of the prompt: disjoint, covering ``0 .. max_number`` together, and the same for the same seed.

    ## Arguments

    * ``target_lang``: language of the references, a code in ``num2words.CONVERTER_CLASSES``
      (``"fr"``, ``"de"``, ``"es"``, ...).
    * ``source_lang``: language of the prompts, likewise; must differ from ``target_lang``.
    * ``max_number``: the largest number, >= 0. Some languages cannot spell every large number (e.g.
      num2words 0.5.14 fails on 1100 in ``"am"``); a ValueError then names the first such number.
    * ``seed``: an integer choosing the split.

    ## Version History

    * v0: initial version
    """
    target_lang = _check_lang("target_lang", target_lang)
    source_lang = _check_lang("source_lang", source_lang)
    if source_lang == target_lang:
        raise ValueError(
            f"source_lang and target_lang are both {source_lang!r}: nothing to translate; "
            "choose two different languages"
        )
    max_number = check_int("max_number", max_number, low=0)
    seed = check_int("seed", seed)

    by_prompt: dict[str, list[str]] = {}
    for n in range(max_number + 1):
        refs = by_prompt.setdefault(_spell(n, source_lang, max_number), [])
        ref = _spell(n, target_lang, max_number)
        if ref not in refs:
            refs.append(ref)
    examples = [Example(prompt, refs) for prompt, refs in by_prompt.items()]
    return Task(
        name="numbers",
        splits=split_by_hash(examples, seed, FRACTIONS),
        level="word",
        description=f"Translate numbers 0..{max_number} written in words from {source_lang} to {target_lang}.",
        config={
            "target_lang": target_lang,
            "source_lang": source_lang,
            "max_number": max_number,
            "seed": seed,
        },
    )
