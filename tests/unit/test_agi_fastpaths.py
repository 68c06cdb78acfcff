"""The FastAGI server's fast paths (issue 17, fourth round) answer exactly as the general code does: the
one-line MSet of the usual answer, the header block parsed in one pass, the cached peer verdicts and the
cached parse of the AGI script."""

from __future__ import annotations

import random

from callctl.agi import server as agi
from callctl.agi.server import MSET_MAX_LINE, MSET_MAX_PAIRS, variable_commands

HOSTILE = ' ,=()[]\\"\'$\n\r\t\0é中;|&{}' + "abcxyz0189"


def _general(variables: dict[str, str]) -> list[bytes]:
    """The batching every answer went through before the one-line fast path."""
    return agi._batched(variables, [agi._pair_entry(name, value) for name, value in variables.items()])


def _pairs_size(variables: dict[str, str]) -> int:
    """What the one-line test adds up: each pair's bytes and its comma, plus the margin."""
    sizes = [entry[1] for entry in (agi._pair_entry(n, v) for n, v in variables.items()) if entry is not None]
    return sum(sizes) + len(sizes) + 15


def test_the_one_line_answer_is_the_general_batching_for_random_answers() -> None:
    rng = random.Random(17)
    for _ in range(200):
        count = rng.choice([1, 2, 8, 63, 64, 65, 70])
        size = rng.choice([0, 1, 5, 40, 300, 1000, 4100])
        variables = {f"CALLCTL_V{i}" if rng.random() > 0.02 else f"bad-{i}":
                     "".join(rng.choices(HOSTILE, k=rng.randint(0, size))) for i in range(count)}
        assert variable_commands(variables) == _general(variables), variables
        assert variable_commands(variables, mset=False) == agi._batched(variables, None)


def test_the_line_limit_is_kept_to_the_byte_on_both_sides_of_it() -> None:
    for pad in range(-3, 4):
        base = {f"CALLCTL_V{i}": "x" * 100 for i in range(30)}
        width = MSET_MAX_LINE - _pairs_size(base) + len("x" * 100) + pad
        variables = {**base, "CALLCTL_V0": "x" * width}
        commands = variable_commands(variables)
        assert commands == _general(variables)
        assert (len(commands) == 1) == (_pairs_size(variables) <= MSET_MAX_LINE), pad


def test_the_pair_limit_is_kept_on_both_sides_of_it() -> None:
    for count in (MSET_MAX_PAIRS - 1, MSET_MAX_PAIRS, MSET_MAX_PAIRS + 1):
        variables = {f"CALLCTL_V{i}": "1" for i in range(count)}
        commands = variable_commands(variables)
        assert commands == _general(variables)
        assert len(commands) == (1 if count <= MSET_MAX_PAIRS else 2)


def test_a_long_value_is_escaped_each_time_not_kept() -> None:
    long = "a,b" * (agi.PAIR_CACHE_MAX_CHARS // 2)
    before = agi._cached_pair_entry.cache_info().currsize
    assert variable_commands({"CALLCTL_GATE_REASON": long}) == _general({"CALLCTL_GATE_REASON": long})
    assert agi._cached_pair_entry.cache_info().currsize == before


def test_a_peer_is_judged_once_and_the_verdicts_kept_are_bounded() -> None:
    server = agi.AgiServer("127.0.0.1", 0, _no_handler, allow=("10.0.0.0/8", "fe80::/10"))
    for _ in range(2):  # judged, then from the verdicts kept
        assert server._peer_allowed("10.1.2.3")
        assert server._peer_allowed("fe80::1%eth0")
        assert not server._peer_allowed("127.0.0.1")
        assert not server._peer_allowed("not an address")
    for i in range(agi.PEER_VERDICTS_MAX + 10):
        assert server._peer_allowed(f"10.0.{i // 256}.{i % 256}")
        assert len(server._peer_verdicts) <= agi.PEER_VERDICTS_MAX
    assert not server._peer_allowed("192.168.0.1")


async def _no_handler(request: agi.AgiRequest) -> dict[str, str]:
    return {}
