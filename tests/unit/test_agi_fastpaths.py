"""The FastAGI server's fast paths (issue 17, fourth round) answer exactly as the general code does: the
one-line MSet of the usual answer, the header block parsed in one pass, the cached peer verdicts and the
cached parse of the AGI script."""

from __future__ import annotations

import random

from callctl.agi import commands
from callctl.agi import server as agi
from callctl.agi.commands import MSET_MAX_LINE, MSET_MAX_PAIRS, variable_commands

HOSTILE = ' ,=()[]\\"\'$\n\r\t\0é中;|&{}' + "abcxyz0189"


def _general(variables: dict[str, str]) -> list[bytes]:
    """The batching every answer went through before the one-line fast path."""
    return commands._batched(variables, [commands._pair_entry(name, value) for name, value in variables.items()])


def _pairs_size(variables: dict[str, str]) -> int:
    """What the one-line test adds up: each pair's bytes and its comma, plus the margin."""
    sizes = [entry[1] for entry in (commands._pair_entry(n, v) for n, v in variables.items()) if entry is not None]
    return sum(sizes) + len(sizes) + 15


def test_the_one_line_answer_is_the_general_batching_for_random_answers() -> None:
    rng = random.Random(17)
    for _ in range(200):
        count = rng.choice([1, 2, 8, 63, 64, 65, 70])
        size = rng.choice([0, 1, 5, 40, 300, 1000, 4100])
        variables = {f"CALLCTL_V{i}" if rng.random() > 0.02 else f"bad-{i}":
                     "".join(rng.choices(HOSTILE, k=rng.randint(0, size))) for i in range(count)}
        assert variable_commands(variables) == _general(variables), variables
        assert variable_commands(variables, mset=False) == commands._batched(variables, None)


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
    long = "a,b" * (commands.PAIR_CACHE_MAX_CHARS // 2)
    before = commands._cached_pair_entry.cache_info().currsize
    assert variable_commands({"CALLCTL_GATE_REASON": long}) == _general({"CALLCTL_GATE_REASON": long})
    assert commands._cached_pair_entry.cache_info().currsize == before


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


LINES = [b"agi_network: yes", b"agi_request: agi://127.0.0.1/gate?account=abc", b"agi_channel: PJSIP/x-1",
         b"agi_callerid: Ren\xe9 \xff\xfe", b"agi_extension:  0123456789  ", b"agi_x\r", b"agi_y: v\r", b"\r", b" ",
         b"agi_dup: 1", b"agi_dup: 2", b"no_prefix: 1", b"agi_nocolon", b"agi_emoji: \xf0\x9f", b"agi_z:\xe2\x82",
         b"agi_empty:", b"agi_colons: a:b:c", b"agi_nul: a\x00b"]


class _Probe(agi._Session):
    """A session that records how its header block ended instead of running a handler."""

    __slots__ = ()
    outcomes: list[tuple[str, object]] = []

    def _headers_done(self) -> None:
        self._phase = agi._Phase.DONE
        self.outcomes.append(("headers", dict(self._headers)))

    def _refuse(self, reason: str) -> None:
        self._phase = agi._Phase.DONE
        self.outcomes.append(("refused", reason))


def _outcome(server: agi.AgiServer, chunks: list[bytes]) -> tuple[str, object] | None:
    _Probe.outcomes = []
    session = _Probe(server)
    for chunk in chunks:
        if session._phase is agi._Phase.DONE:
            break
        session.data_received(chunk)
    return _Probe.outcomes[0] if _Probe.outcomes else ("waiting", dict(session._headers))


async def test_a_header_block_in_one_read_ends_as_it_does_line_by_line() -> None:
    import asyncio

    server = agi.AgiServer("127.0.0.1", 0, _no_handler)
    server._loop = asyncio.get_running_loop()
    rng = random.Random(4573)
    for _ in range(3000):
        lines = rng.choices(LINES[:5], k=rng.randint(0, 6)) + rng.choices(LINES, k=rng.choice([0, 0, 1, 2]))
        rng.shuffle(lines)
        if rng.random() < 0.02:
            lines = [b"agi_h%d: x" % i for i in range(agi.MAX_HEADERS + rng.randint(-1, 2))]
        end = rng.choice([b"\n\n", b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\n", b""])
        block = b"\n".join(lines) + end + rng.choice([b"", b"200 result=0\n"])
        one_read = _outcome(server, [block])
        assert one_read == _outcome(server, [block[i:i + 1] for i in range(len(block))]), block


async def test_what_follows_the_block_in_the_same_read_is_kept() -> None:
    import asyncio

    server = agi.AgiServer("127.0.0.1", 0, _no_handler)
    server._loop = asyncio.get_running_loop()
    session = _Probe(server)
    session.data_received(b"agi_network: yes\nagi_extension: 15\n\n200 result=0\n")
    assert _Probe.outcomes[-1] == ("headers", {"agi_network": "yes", "agi_extension": "15"})
    assert bytes(session._buffer) == b"200 result=0\n"


def _parse_request_before(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """How parse_request read the script and its parameters before the cache (its code then)."""
    import urllib.parse

    raw = headers.get("agi_network_script") or urllib.parse.urlsplit(headers.get("agi_request", "")).path
    split = urllib.parse.urlsplit(raw)
    params = dict(urllib.parse.parse_qsl(split.query))
    if not params:
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers.get("agi_request", "")).query))
    return split.path.strip("/"), params


def test_the_script_and_its_parameters_are_read_as_before_the_cache() -> None:
    long = "x" * agi.ROUTE_CACHE_MAX_CHARS
    for headers in ({"agi_network_script": "gate?account=abc", "agi_request": "agi://h/gate?account=abc"},
                    {"agi_request": "agi://h:4573/gate?account=abc&country=FR"},
                    {"agi_network_script": "gate", "agi_request": "agi://h/gate?account=abc"},
                    {"agi_network_script": "/gate/", "agi_arg_1": "abc", "agi_arg_2": "x"},
                    {"agi_network_script": "gate?a=1&a=2&b=%41+c"}, {"agi_network_script": f"gate?account={long}"}, {}):
        for _ in range(2):  # parsed, then from the cache (or parsed again: too long to keep)
            request = agi.parse_request(headers, "127.0.0.1")
            assert (request.script, request.params) == _parse_request_before(headers)
    request = agi.parse_request({"agi_network_script": "/gate/", "agi_arg_1": "abc", "agi_arg_2": "x"}, "p")
    assert request.args == ("abc", "x")
