"""Side tasks an owner starts and keeps (STYLE: every ``create_task`` result is kept by its owner):
a failure is logged under the owner's event name, never lost, and the owner waits for or cancels
what is left when it closes. Also the bounded wait on an event that such tasks and their owners share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from callctl.logging import get_logger

log = get_logger("callctl.tasks")


async def wait_for_event(event: asyncio.Event, timeout_s: float) -> bool:
    """True once ``event`` is set (at once if it is); False if ``timeout_s`` passed first."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class SideTasks:
    def __init__(self, failure_event: str = "side_task_failed") -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure_event = failure_event

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception as exc:  # one side task's bug must not vanish with its task
            log.error(self._failure_event, error=str(exc) or repr(exc))

    async def wait_for_done(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the tasks running now; True if all have finished."""
        if not self._tasks:
            return True
        _done, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        return not pending

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
