"""``hotline prompts``: the survey's prompt files, spoken by espeak-ng and made 8 kHz by sox.

Writes ``<sounds>/<language>/hotline/survey-*.wav`` (16-bit mono 8 kHz, what Asterisk's
format_wav plays without transcoding) for zh and en. Run at install time, into Asterisk's
sounds folder (Debian: /usr/share/asterisk/sounds). Files a site recorded itself are kept
unless ``--replace`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from survey.prompts import LANGUAGES, prompt_texts
from survey.scale import parse_scale

VOICES = {"zh": "cmn", "en": "en"}
# espeak-ng's rate; its Mandarin at the default 175 takes 13 s over the question.
WORDS_PER_MINUTE = {"zh": 260, "en": 165}
EXIT_MISSING_TOOL = 3


class PromptError(RuntimeError):
    """A prompt could not be made; the message says which and why."""


def speak(text: str, language: str, target: Path) -> None:
    """``text`` as a WAV Asterisk plays as is: espeak-ng's 22.05 kHz output resampled by sox."""
    with tempfile.TemporaryDirectory() as scratch:
        spoken = Path(scratch) / "spoken.wav"
        subprocess.run(
            ["espeak-ng", "-v", VOICES[language], "-s", str(WORDS_PER_MINUTE[language]),
             "-w", str(spoken), text],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        partial = target.with_suffix(".partial.wav")
        subprocess.run(
            ["sox", str(spoken), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
             str(partial)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        partial.replace(target)  # Asterisk never sees half a file


def build_prompts(sounds: Path, scale_text: str, *, replace: bool = False) -> list[Path]:
    """Every language's prompts under ``sounds``; returns the files written."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise PromptError(
            f"{' and '.join(missing)} not found: install Debian's espeak-ng and sox, or put "
            "your own recordings under <sounds>/<language>/hotline/"
        )
    scale = parse_scale(scale_text)
    written = []
    for language in LANGUAGES:
        for prompt, text in prompt_texts(scale, language).items():
            target = sounds / language / f"{prompt.value}.wav"
            if target.exists() and not replace:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                speak(text, language, target)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                raise PromptError(f"{target.name} ({language}): {error}") from None
            written.append(target)
    return written


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    prompts = commands.add_parser(
        "prompts",
        help="make the survey's prompt files (zh, en) with espeak-ng",
        description=(
            "Speak the survey's prompts for the configured scale (HOTLINE_SURVEY_SCALE) into "
            "SOUNDS/<language>/hotline/survey-{ask,again,thanks}.wav, 8 kHz for Asterisk."
        ),
    )
    prompts.add_argument("--sounds", type=Path, required=True, help="Asterisk's sounds folder")
    prompts.add_argument(
        "--replace", action="store_true", help="also replace files that exist (a site's own)"
    )


def run(scale_text: str, args: argparse.Namespace) -> int:
    try:
        written = build_prompts(args.sounds, scale_text, replace=args.replace)
    except PromptError as error:
        print(f"hotline prompts: {error}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    print(f"hotline prompts: {len(written)} files written under {args.sounds}")
    return 0
