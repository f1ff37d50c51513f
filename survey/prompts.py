"""What the survey's prompts say, from the configured scale, in each language we ship.

``hotline prompts`` speaks these texts with a free TTS at install time; a site may replace
the files with its own recordings under the same names.
"""

from __future__ import annotations

from survey.dialogue import Prompt
from survey.scale import RatingScale

LANGUAGES = ("zh", "en")


def prompt_texts(scale: RatingScale, language: str) -> dict[Prompt, str]:
    """The three prompts' texts in ``language`` (``zh`` or ``en``)."""
    if language == "zh":
        choices = "，".join(f"{a.label_zh}请按{a.key}" for a in scale.answers)
        ask = f"请您对本次服务进行评价。{choices}。"
        return {
            Prompt.ASK: ask,
            Prompt.AGAIN: f"按键无效。{ask}",
            Prompt.THANKS: "感谢您的评价，再见。",
        }
    if language == "en":
        choices = " ".join(f"For {a.label_en.lower()}, press {a.key}." for a in scale.answers)
        ask = f"Please rate our service. {choices}"
        return {
            Prompt.ASK: ask,
            Prompt.AGAIN: f"Sorry, that key is not valid. {ask}",
            Prompt.THANKS: "Thank you for your rating. Goodbye.",
        }
    raise ValueError(f"no prompts in {language!r}; we ship {', '.join(LANGUAGES)}")
