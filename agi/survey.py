"""The ``survey`` FastAGI script: the citizen's one key after the agent hung up.

The dialplan reaches it only after a human answered and left (Queue's ``c`` option, Dial's
``g``); nothing comes before the human. It plays what ``survey.dialogue`` asks for, reads one
key per ask and sets ``HOTLINE_RATING`` (a scale code or ``not_rated``) and
``HOTLINE_RATING_KEY``; the dialplan then tells the bridge in a ``HotlineRating`` user event
and in queue_log, the same way as every other call fact. Prompts are named without a language:
Asterisk picks ``sounds/<CHANNEL(language)>/hotline/...``, so the prompt follows the call's.
"""

from __future__ import annotations

import logging
from collections import Counter

from agi.codec import AgiRequest
from agi.server import AgiHandler, AgiHangup, AgiSession
from survey.dialogue import Ask, Miss, Prompt, Rated, SurveyDialogue
from survey.scale import RatingScale

log = logging.getLogger(__name__)

PLAYBACK_ALLOWANCE_SECONDS = 30.0  # the longest prompt, on top of the wait for a key


def get_data_command(prompt: Prompt, wait_ms: int, max_digits: int = 1) -> str:
    """``GET DATA``: play ``prompt``, interruptible by a key, then wait up to ``wait_ms``."""
    return f"GET DATA {prompt.value} {wait_ms} {max_digits}\n"


def stream_file_command(prompt: Prompt) -> str:
    return f'STREAM FILE {prompt.value} ""\n'


def survey_handler_for(
    scale: RatingScale, *, key_seconds: float, counters: Counter[str]
) -> AgiHandler:
    """The handler over ``scale``; ``key_seconds``: how long each ask waits after its prompt."""
    wait_ms = max(1, round(key_seconds * 1000))
    within = key_seconds + PLAYBACK_ALLOWANCE_SECONDS

    async def handle(request: AgiRequest, session: AgiSession) -> None:
        dialogue = SurveyDialogue(scale)
        step = dialogue.first()
        try:
            while isinstance(step, Ask):
                reply = await session.command(get_data_command(step.prompt, wait_ms), within=within)
                if reply.result == "-1":  # hung up, or the prompt could not be played
                    step = dialogue.hung_up()
                elif reply.result == "":  # "200 result= (timeout)": no key in time
                    step = dialogue.silence()
                else:
                    step = dialogue.key(reply.result[:1])
        except AgiHangup:
            step = dialogue.hung_up()
        rated: Rated = step
        counters[f"survey_{rated.rating}"] += 1
        if rated.why_not is not None:
            counters[f"survey_{rated.why_not.value}"] += 1
        log.info("survey of %s: %s (key %r, %s)", request.uniqueid, rated.rating, rated.key,
                 rated.why_not or "answered")  # fmt: skip
        if rated.why_not is Miss.HUNG_UP:
            return  # nobody to tell; the bridge counts an answered call without a rating
        await session.set_variables(
            {"HOTLINE_RATING": rated.rating, "HOTLINE_RATING_KEY": rated.key}
        )
        closing = rated.closing_prompt
        if closing is not None:
            await session.command(stream_file_command(closing), within=within)

    return handle
