"""Recording names and WAV headers: the pure parts of recording ingest."""

from datetime import date

import pytest

from recording.naming import RecordingName, RecordingNameError, parse_key, safe_key
from recording.wav import WavError, parse_wav_header, wav_header


def test_name_round_trips_through_its_key() -> None:
    name = RecordingName(date(2026, 12, 2), "1764666000.42", "12345-20261202-000001")
    assert name.key == "2026/12/02/1764666000.42_12345-20261202-000001.wav"
    assert name.in_progress_key == "2026/12/02/1764666000.42_12345-20261202-000001.recording.wav"
    assert parse_key(name.key) == name


def test_a_named_pbxs_recording_is_kept_under_its_name_in_the_store() -> None:
    name = RecordingName(date(2026, 12, 2), "1764666000.42", None, pbx="east")
    assert name.key == "east/2026/12/02/1764666000.42_none.wav"
    assert parse_key(name.key) == name and safe_key(name.key) == name.key


def test_call_without_ticket_is_named_none() -> None:
    name = parse_key("2026/12/02/1764666000.42_none.wav")
    assert name.ticket is None


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "2026/12/02/../../x.wav",
        "/2026/12/02/1.1_none.wav",
        "2026/13/40/1.1_none.wav",
        "2026/12/02/1.1_none.recording.wav",
        "../2026/12/02/1.1_none.wav",
        "a/b/2026/12/02/1.1_none.wav",
        "west!/2026/12/02/1.1_none.wav",
        "2026/12/02/1.1_<script>.wav",
        "2026/12/02/nouniqueid_none.wav",
    ],
)
def test_paths_that_are_not_recording_names_are_refused(key: str) -> None:
    with pytest.raises(RecordingNameError):
        safe_key(key)


def test_pcm_header_gives_duration_and_format() -> None:
    data = bytes(16000 * 3)  # 3 s of 8 kHz 16-bit mono
    info = parse_wav_header(wav_header(8000, len(data)) + data, 44 + len(data))
    assert info.format == "wav/pcm/8000/1/16"
    assert info.duration_seconds == pytest.approx(3.0)


def test_truncated_file_is_an_error() -> None:
    with pytest.raises(WavError, match="not closed or cut"):
        parse_wav_header(wav_header(8000, 16000), 44 + 8000)


def test_unpatched_header_of_an_open_file_is_an_error() -> None:
    with pytest.raises(WavError):
        parse_wav_header(wav_header(8000, 0), 44 + 16000)


def test_non_wav_file_is_an_error() -> None:
    with pytest.raises(WavError, match="not a WAV"):
        parse_wav_header(b"ID3\x03" + bytes(100), 104)
