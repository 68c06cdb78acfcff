"""Every place that takes a number from outside checks it with callctl.numbers (one E.164 definition):
text that merely starts with '+' ('+abc', '+', '+15') is not a number anywhere."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

import callctl.gating.originate as originate
from callctl.conference.cli import _access_numbers
from callctl.config import Settings
from callctl.errors import CallctlError, LineError
from callctl.gating.optout import normalise
from callctl.lines.accounts import require_e164
from callctl.privacy.cli import _who
from callctl.privacy.rules import rating_prefix
from callctl.recording.calls import _country_of
from tests.unit.test_gating_originate import BODY, _dialer
from tests.unit.test_lines_routing import FakeCall, User, service

NOT_NUMBERS = ["+abc", "+", "+15"]


@pytest.mark.parametrize("text", NOT_NUMBERS)
async def test_a_line_call_to_a_non_number_hears_invalid_number_and_nothing_is_dialled(text: str) -> None:
    call = FakeCall(text, {})
    assert await service(User()).outbound(call, "alice") == "invalid_number"
    assert call.dialled == [] and call.hung_up == "unallocated"


@pytest.mark.parametrize("text", NOT_NUMBERS)
async def test_an_originate_request_from_a_non_number_is_refused(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def account_country(pool: Any, account_id: Any) -> str:
        return "FR"

    monkeypatch.setattr(originate.store, "account_country", account_country)
    placed: list[str] = []
    status, answer = await _dialer(True, placed).request({**BODY, "from": text})
    assert status == 400 and answer["error"] == f"from '{text}' is not a number in E.164 or of FR" and placed == []


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_a_conference_access_number_must_be_a_number(text: str) -> None:
    args = argparse.Namespace(access_number=["+33170000001", text])
    with pytest.raises(CallctlError, match=r"access numbers must be E\.164 \(\+CC\.\.\.\): "):
        _access_numbers(args, Settings())


def test_conference_access_numbers_are_normalised() -> None:
    args = argparse.Namespace(access_number=[" +33 1 70 00 00 01 "])
    assert _access_numbers(args, Settings()) == ["+33170000001"]


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_non_numbers_are_refused_by_accounts_privacy_and_the_opt_out_list(text: str) -> None:
    with pytest.raises(LineError, match=r"is not a phone number in E\.164 form"):
        require_e164(text)
    with pytest.raises(CallctlError, match=r"is not in E\.164 form"):
        _who(argparse.Namespace(email=None, number=text))
    assert normalise(text) is None


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_a_non_number_has_no_country_and_no_rating_prefix(text: str) -> None:
    assert _country_of(text, "FR") is None
    assert rating_prefix(text) == ""


def test_real_numbers_still_pass_everywhere() -> None:
    assert require_e164("+33123456789") == "+33123456789"
    assert _who(argparse.Namespace(email=None, number="+33123456789")) == (None, "+33123456789")
    assert normalise("+33612345678") == "+33612345678" and normalise("06 12 34 56 78") == "+33612345678"
    assert normalise("+44 20 7946 0000") == "+442079460000"
    assert _country_of("+442079460000", "FR") == "GB" and rating_prefix("+33612345678").startswith("+336")
