"""Which handler takes a call: the one place that decides it, in this order.

1. a two-party call a previous engine bridged (adopted at a resync): its resume handler (the one of its first
   Stasis argument if any: a dialer call), never routed again;
2. a call whose first Stasis argument names a handler (``callctl-originate``: a dialer call the engine
   placed; ``line-outbound``: a business-line user calling out);
3. a number the dialplan does not own itself (absent, or only matched by a pattern): the number
   handlers in turn (a business-line DID rings its user); the first that takes it;
4. a number of the dialplan: its flow, in the route's language;
5. otherwise an announcement and hang-up (``no_route``).

The router takes the current dialplan once per call (a reload never changes a running call). Handlers
are registered by the composition root; features never call back into it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from callctl.calls.port import CallPort
from callctl.flows.engine import run_flow
from callctl.flows.model import Dialplan
from callctl.logging import get_logger

log = get_logger("callctl.router")

NO_ROUTE_MEDIA = ["sound:ss-noservice"]

# A handler runs the whole call and returns its outcome; it names its flow in ``call.result.flow``.
Handler = Callable[[CallPort, Dialplan], Awaitable[str]]
# A number handler returns None when the number is not one of its own (the next one is asked).
NumberHandler = Callable[[CallPort, Dialplan], Awaitable[str | None]]


class Router:
    def __init__(self, dialplan: Callable[[], Dialplan]) -> None:
        self._dialplan = dialplan
        self._resumed: Handler | None = None
        self._resumed_by_arg: dict[str, Handler] = {}
        self._by_arg: dict[str, Handler] = {}
        self._numbers: list[NumberHandler] = []

    def on_resumed(self, handler: Handler, *, arg: str | None = None) -> None:
        """Two-party calls a previous engine bridged, found up at a resync; with ``arg``, only those whose
        first Stasis argument is ``arg`` (a dialer call stays its account's), else all the others."""
        if arg is None:
            self._resumed = handler
        else:
            self._resumed_by_arg[arg] = handler

    def on_arg(self, arg: str, handler: Handler) -> None:
        """Calls whose first Stasis argument is ``arg`` (extensions.conf, or an originate's appArgs)."""
        self._by_arg[arg] = handler

    def on_number(self, handler: NumberHandler) -> None:
        """Asked, in registration order, for numbers the dialplan does not own itself."""
        self._numbers.append(handler)

    async def __call__(self, call: CallPort) -> tuple[str, str | None, str | None]:
        """Run the call to its end: (outcome, flow, dialplan version)."""
        plan = self._dialplan()  # captured once: a reload never changes a running call
        call.result.dialplan_version = plan.version
        outcome = await self._route(call, plan)
        return outcome, call.result.flow, plan.version

    async def _route(self, call: CallPort, plan: Dialplan) -> str:
        if call.resumed is not None:
            resumed = (self._resumed_by_arg.get(call.args[0]) if call.args else None) or self._resumed
            if resumed is not None:
                return await resumed(call, plan)
        handler = self._by_arg.get(call.args[0]) if call.args else None
        if handler is not None:
            return await handler(call, plan)
        route = plan.route(call.called)
        if route is None or route.entry != route.number:
            for numbers in self._numbers:
                outcome = await numbers(call, plan)
                if outcome is not None:
                    return outcome
        if route is None:
            log.warning("call_no_route", called=call.called)
            await call.answer()
            await call.play(NO_ROUTE_MEDIA, interruptible=False)
            await call.hang_up("unallocated")
            return "no_route"
        call.language = route.language
        call.country = route.country
        call.result.flow = route.flow
        result = await run_flow(plan, route, call, record=call.result.trace)
        call.result.flow = result.flow  # a flow may go on in another one
        return result.outcome
