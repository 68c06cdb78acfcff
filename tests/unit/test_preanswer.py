"""Which numbers Asterisk answers itself before Stasis(), and how the engine keeps its globals (wt-preanswer)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from callctl.calls.supervisor import answered_arg
from callctl.errors import AriUnavailable
from callctl.flows.model import Dialplan
from callctl.flows.preanswer import buckets, number_key, preanswered_numbers
from callctl.preanswer import PreAnswer
from tests.unit.test_flows_engine import plan_with

FLOWS = """\
    flows:
      answered:
        - answer
        - play: hello
      busy:
        - hangup: busy
      early:
        - play: hello
        - answer
      switched:
        - set: {team: sales}
        - answer
    """
NUMBERS = """\
    numbers:
      - {number: "+33900000001", flow: answered, language: en}
      - {number: "+33900000002", flow: busy, language: en}
      - {number: "+33900000003", flow: early, language: en}
      - {number: "+33900000004", flow: switched, language: en}
      - {number: "+33900000005", flow: answered, language: fr}
      - {pattern: "+331XXXXXXXX", flow: answered, language: fr}
      - {pattern: "*", flow: busy, language: en, country: FR}
    """


def test_only_exact_numbers_whose_flow_starts_with_answer_are_preanswered(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, FLOWS, NUMBERS)
    # A rejection, early media or a step before the answer stays the engine's; a pattern's numbers too.
    assert preanswered_numbers(plan) == {"33900000001", "33900000005"}


def test_the_shipped_dialplan_preanswers_its_conference_and_demo_numbers_but_not_the_pstn_demo() -> None:
    from callctl.dialplans import DialplanHolder
    from tests.unit.test_flows_engine import REPO

    keys = preanswered_numbers(DialplanHolder(REPO / "dialplan").current)
    assert {"33900000001", "33900000100", "33900000101"} <= keys
    assert "33900000004" not in keys  # pstn-demo starts with a dial


def test_number_keys_are_the_digits_of_e164_numbers_only() -> None:
    assert number_key("+33900000001") == "33900000001"
    assert number_key("33900000001") is None
    assert number_key("+3390000*001") is None
    assert number_key("+") is None


def test_numbers_share_at_most_100_globals_by_their_last_two_digits() -> None:
    keys = frozenset(f"339{n:08d}" for n in range(10_000))
    written = buckets(keys, "gabc")
    assert len(written) == 100
    assert written["CALLCTL_PA_07"].startswith("gabc-33900000007-33900000107-")
    assert sum(len(v.split("-")) - 1 for v in written.values()) == 10_000


def test_answered_arg_gives_asterisks_answer_time_and_leaves_the_other_arguments() -> None:
    at, rest = answered_arg(("answered=1796333352.525141",))
    assert at == dt.datetime(2026, 12, 3, 21, 29, 12, 525141, tzinfo=dt.UTC) and rest == ()
    assert answered_arg(("line-outbound",)) == (None, ("line-outbound",))
    assert answered_arg(("answered=soon", "x")) == (None, ("x",))  # unreadable: billed from the arrival


class Globals:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes: list[tuple[str, str]] = []
        self.down = False

    async def set_global(self, name: str, value: str) -> None:
        if self.down:
            raise AriUnavailable("not connected to Asterisk ARI at test")
        self.values[name] = value
        self.writes.append((name, value))

    def preanswering(self, key: str) -> bool:
        token, *numbers = self.values.get(f"CALLCTL_PA_{key[-2:]}", "").split("-")
        return bool(token) and token == self.values.get("CALLCTL_PREANSWER") and key in numbers


async def test_publish_turns_off_writes_every_number_under_a_new_token_then_turns_on(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, FLOWS, NUMBERS)
    ops = Globals()
    ops.values["CALLCTL_PA_03"] = "gold-33900000003"  # a previous engine's set
    ops.values["CALLCTL_PREANSWER"] = "gold"
    pre = PreAnswer(ops, lambda: plan, ami_user="callctl")
    await pre.publish()
    assert ops.writes[0] == ("CALLCTL_PREANSWER", "") and ops.writes[-1][0] == "CALLCTL_PREANSWER"
    assert ("CALLCTL_PREANSWER_AMI", "callctl") in ops.writes
    assert ops.preanswering("33900000001") and ops.preanswering("33900000005")
    assert not ops.preanswering("33900000003")  # the old engine's number is dead with its token


async def test_a_reload_gives_new_numbers_the_token_and_takes_it_from_those_that_no_longer_qualify(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    current: list[Dialplan] = [plan_with(tmp_path / "a", FLOWS, NUMBERS)]
    ops = Globals()
    pre = PreAnswer(ops, lambda: current[0])
    await pre.publish()
    token = ops.values["CALLCTL_PREANSWER"]
    current[0] = plan_with(tmp_path / "b", FLOWS, NUMBERS.replace("flow: answered, language: fr}\n      - {pattern",
                                                                   "flow: early, language: fr}\n      - {pattern")
                           .replace("+33900000002\", flow: busy", "+33900000002\", flow: answered"))
    ops.writes.clear()
    await pre.update()
    # Only the buckets that changed are written: 02 gains its number, 05 is emptied, 01 stays.
    assert sorted(ops.writes) == [("CALLCTL_PA_02", f"{token}-33900000002"), ("CALLCTL_PA_05", "")]
    assert pre.published == {"33900000001", "33900000002"}
    assert ops.preanswering("33900000002") and not ops.preanswering("33900000005")


async def test_withdraw_turns_preanswering_off_and_a_later_connect_does_not_turn_it_on(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, FLOWS, NUMBERS)
    ops = Globals()
    pre = PreAnswer(ops, lambda: plan)
    await pre.publish()
    await pre.withdraw()
    assert ops.values["CALLCTL_PREANSWER"] == "" and not ops.preanswering("33900000001")
    await pre.publish()  # a reconnect while stopping
    assert ops.values["CALLCTL_PREANSWER"] == ""


async def test_asterisk_unreachable_leaves_preanswering_off_until_the_next_connect(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, FLOWS, NUMBERS)
    ops = Globals()
    pre = PreAnswer(ops, lambda: plan)
    ops.down = True
    await pre.publish()  # logged, not raised
    await pre.update()  # nothing published on this connection: nothing to change
    assert ops.writes == []
    ops.down = False
    await pre.publish()
    assert ops.preanswering("33900000001")


async def test_a_call_asterisk_answered_is_billed_from_its_answer_and_its_answer_step_sends_nothing() -> None:
    import dataclasses

    from callctl.ari.events import StasisStart
    from callctl.calls.call import Call
    from callctl.calls.supervisor import Supervisor
    from callctl.metrics import Metrics
    from tests.unit.test_calls import FakeOps, Sink, _wait, channel

    ops, sink = FakeOps(), Sink()
    seen: list[tuple[str, ...]] = []

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        seen.append(call.args)
        ops.mailboxes[call.channel.id] = call._mailbox  # the fake delivers the channel's end there
        await call.answer()  # the flow's "answer" step
        await call.hang_up()
        return "completed", "welcome", "v1"

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    up = dataclasses.replace(channel("pre"), state="Up")
    sup.dispatcher.route(StasisStart(dt.datetime(2026, 12, 3, 21, 29, 13, tzinfo=dt.UTC), up,
                                     ("answered=1796333352.525141",)))
    await _wait(lambda: bool(sink.records))
    [record] = sink.records
    assert record.answered_at == dt.datetime(2026, 12, 3, 21, 29, 12, 525000, tzinfo=dt.UTC)  # CDRs keep ms
    assert ("answer", "pre") not in ops.calls and seen == [()]
