"""The one-key survey as a pure dialogue: what to play next, and the rating it ends with.

One rating per call (一次一评): the citizen hears the question and presses a key. A key
outside the scale, or no key before the time is up, is asked once more; a second miss ends
as ``not_rated``, as does a hang-up. Nothing here does I/O: ``agi.survey`` plays the prompts
and reads the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from survey.scale import NOT_RATED, RatingScale


class Prompt(StrEnum):
    """Prompt files, under the sounds folder's ``hotline/`` (per language, as Asterisk looks)."""

    ASK = "hotline/survey-ask"
    AGAIN = "hotline/survey-again"
    THANKS = "hotline/survey-thanks"


class Miss(StrEnum):
    WRONG_KEY = "wrong_key"
    NO_KEY = "no_key"
    HUNG_UP = "hung_up"


@dataclass(frozen=True, slots=True)
class Ask:
    """Play ``prompt`` and wait for one key."""

    prompt: Prompt


@dataclass(frozen=True, slots=True)
class Rated:
    """The survey is over: ``rating`` is a scale code or ``not_rated``."""

    rating: str
    key: str = ""
    why_not: Miss | None = None

    @property
    def closing_prompt(self) -> Prompt | None:
        return Prompt.THANKS if self.why_not is not Miss.HUNG_UP else None


Step = Ask | Rated


class SurveyDialogue:
    """``first()``, then ``key(k)`` / ``silence()`` / ``hung_up()`` until a ``Rated``."""

    def __init__(self, scale: RatingScale, asks: int = 2) -> None:
        if asks < 1:
            raise ValueError("the survey asks at least once")
        self._scale = scale
        self._asks_left = asks
        self._last_key = ""
        self.result: Rated | None = None

    def first(self) -> Step:
        return self._ask(Prompt.ASK)

    def key(self, key: str) -> Step:
        if self.result is not None:
            return self.result
        answer = self._scale.answer_for_key(key)
        if answer is not None:
            return self._end(Rated(answer.code, key))
        self._last_key = key
        return self._miss(Miss.WRONG_KEY)

    def silence(self) -> Step:
        if self.result is not None:
            return self.result
        return self._miss(Miss.NO_KEY)

    def hung_up(self) -> Rated:
        if self.result is not None:
            return self.result
        return self._end(Rated(NOT_RATED, self._last_key, Miss.HUNG_UP))

    def _miss(self, why: Miss) -> Step:
        if self._asks_left > 0:
            return self._ask(Prompt.AGAIN)
        return self._end(Rated(NOT_RATED, self._last_key, why))

    def _ask(self, prompt: Prompt) -> Ask:
        self._asks_left -= 1
        return Ask(prompt)

    def _end(self, rated: Rated) -> Rated:
        self.result = rated
        return rated
