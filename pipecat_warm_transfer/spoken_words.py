#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Words of spoken text, compared whatever the punctuation and case.

TTS services split, time and punctuate a sentence their own way; the processors that
follow what was said (the hold line, the connected sentence, `say()`) compare words.
"""

from __future__ import annotations


def words(text: str) -> list[str]:
    """The lower-case words of `text` (anything not a letter or digit separates them)."""
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def word_string(text: str) -> str:
    """The words of `text` joined by single spaces."""
    return " ".join(words(text))


def contains_words(text: str, phrase: str) -> bool:
    """Whether `text` holds the words of `phrase` in order, whatever the punctuation."""
    return word_string(phrase) in word_string(text)
