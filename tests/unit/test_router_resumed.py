"""The router's resume handlers: a resumed call whose first Stasis argument names its own resume handler (a
dialer call) goes there; every other resumed call to the default one (business lines)."""

from __future__ import annotations

from typing import Any

from callctl.flows.simulate import FakeCall
from callctl.router import Router
from tests.unit.test_call_path import plan  # noqa: F401 - the fixture


async def test_a_resumed_call_goes_to_the_resume_handler_of_its_first_stasis_argument(plan: Any) -> None:  # noqa: F811
    taken: list[str] = []

    def handler(name: str) -> Any:
        async def handle(call: Any, _plan: Any) -> str:
            taken.append(name)
            return name
        return handle

    router = Router(lambda: plan)
    router.on_resumed(handler("lines"))
    router.on_resumed(handler("dialer"), arg="callctl-originate")
    router.on_arg("callctl-originate", handler("dialer-run"))
    for args in [("callctl-originate", "pstn-demo"), ("line-outbound",), ()]:
        call = FakeCall(called="+33900000001", args=args)
        call.resumed = (object(), "call-x")  # type: ignore[assignment]
        await router(call)
    assert taken == ["dialer", "lines", "lines"]  # never the dialer's flow run again
