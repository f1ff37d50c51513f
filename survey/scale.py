"""The rating scale a citizen answers with one key, and its setting's text form.

The scale is configurable (``HOTLINE_SURVEY_SCALE``); the default is the 12345 hotlines' three
answers: 1 满意 (satisfied), 2 基本满意 (basically satisfied), 3 不满意 (dissatisfied). Each
answer is *good* (counts toward the satisfaction rate) or not; a *review* answer puts the
ticket on the supervisors' review list. ``NOT_RATED`` is what an answered call gets when the
citizen gave no valid key: never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOT_RATED = "not_rated"
DEFAULT_SCALE_TEXT = (
    "1=satisfied/满意/Satisfied/good;"
    "2=basic/基本满意/Basically satisfied/good;"
    "3=dissatisfied/不满意/Dissatisfied/review"
)
_KEY = re.compile(r"^[0-9]$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
KINDS = ("good", "neutral", "review")


class ScaleError(ValueError):
    """A scale text that cannot be used; the message names the part to fix."""


@dataclass(frozen=True, slots=True)
class Answer:
    key: str
    code: str
    label_zh: str
    label_en: str
    kind: str

    @property
    def good(self) -> bool:
        return self.kind == "good"

    @property
    def needs_review(self) -> bool:
        return self.kind == "review"

    def label(self, language: str) -> str:
        return self.label_zh if language.startswith("zh") else self.label_en


@dataclass(frozen=True, slots=True)
class RatingScale:
    answers: tuple[Answer, ...]

    def answer_for_key(self, key: str) -> Answer | None:
        return next((answer for answer in self.answers if answer.key == key), None)

    def answer_for_code(self, code: str) -> Answer | None:
        return next((answer for answer in self.answers if answer.code == code), None)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(answer.code for answer in self.answers)

    @property
    def keys(self) -> str:
        """The valid keys as one string (what AGI's ``GET DATA`` and escape digits take)."""
        return "".join(answer.key for answer in self.answers)


def parse_scale(text: str) -> RatingScale:
    """``key=code/中文/English/kind;...``, kind one of good, neutral, review."""
    answers: list[Answer] = []
    for part in (piece.strip() for piece in text.split(";")):
        if not part:
            continue
        key, sep, rest = part.partition("=")
        fields = [field.strip() for field in rest.split("/")]
        if not sep or len(fields) != 4:
            raise ScaleError(f"scale answer {part!r} is not key=code/中文/English/kind")
        code, label_zh, label_en, kind = fields
        key = key.strip()
        if not _KEY.match(key):
            raise ScaleError(f"scale answer {part!r}: the key must be one digit 0-9")
        if not _CODE.match(code) or code == NOT_RATED:
            raise ScaleError(
                f"scale answer {part!r}: the code must be 1-24 of a-z, 0-9, _ (not {NOT_RATED})"
            )
        if kind not in KINDS:
            raise ScaleError(f"scale answer {part!r}: the kind must be one of {', '.join(KINDS)}")
        if not label_zh or not label_en:
            raise ScaleError(f"scale answer {part!r}: the prompts need both labels")
        answers.append(Answer(key, code, label_zh, label_en, kind))
    if len(answers) < 2:
        raise ScaleError("a rating scale needs at least two answers")
    if len({a.key for a in answers}) != len(answers) or len({a.code for a in answers}) != len(
        answers
    ):
        raise ScaleError("each key and each code may appear once in the scale")
    if not any(a.good for a in answers):
        raise ScaleError("a rating scale needs at least one good answer")
    return RatingScale(tuple(answers))


DEFAULT_SCALE = parse_scale(DEFAULT_SCALE_TEXT)
