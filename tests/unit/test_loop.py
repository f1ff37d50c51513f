"""The event loop the long-running commands run on (``HOTLINE_EVENT_LOOP``)."""

from __future__ import annotations

import asyncio
import builtins
import sys

import pytest

from hotline.cli import main
from hotline.loop import loop_name, run
from infra.config import ConfigError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_asyncio_is_used_when_asked() -> None:
    assert run(_loop_module(), "asyncio") == "asyncio"


def test_uvloop_is_used_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert loop_name("auto") == "uvloop"
    assert run(_loop_module(), "auto") == "uvloop"
    assert run(_loop_module(), "uvloop") == "uvloop"


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def refuse_uvloop(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "uvloop", raising=False)
    monkeypatch.setattr(builtins, "__import__", refuse_uvloop)


@pytest.mark.usefixtures("without_uvloop")
def test_without_uvloop_auto_falls_back_and_uvloop_is_a_configuration_error() -> None:
    assert run(_loop_module(), "auto") == "asyncio"
    coroutine = _loop_module()
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        run(coroutine, "uvloop")
    assert coroutine.cr_frame is None  # closed, never left pending


@pytest.mark.usefixtures("without_uvloop")
def test_the_cli_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOTLINE_EVENT_LOOP", "uvloop")
    assert main(["agi"]) == 2
    assert "uvloop is not installed" in capsys.readouterr().err


def test_an_unknown_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_EVENT_LOOP", "trio")
    assert main(["agi"]) == 2
