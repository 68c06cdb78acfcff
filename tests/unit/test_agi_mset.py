"""``variable_commands``: the gate's variables in one ``EXEC MSet``, checked against a model of Asterisk
22's own parsing (res_agi.c parse_args, main/app.c __ast_app_separate_args, main/pbx_variables.c
pbx_builtin_setvar_multiple). The real Asterisk proof is tests/integration/test_agi_mset_asterisk.py."""

from __future__ import annotations

import random

from callctl.agi.server import MSET_MAX_LINE, MSET_MAX_PAIRS, variable_commands


def _parse_args(line: str) -> list[str]:
    """res_agi.c parse_args: words split on unquoted, unescaped blanks; '"' toggles quoting, '\\' escapes."""
    args: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and cur is None:
                cur = []
            continue
        if ch in " \t" and not quoted and not escaped:
            if cur is not None:
                args.append("".join(cur))
            cur = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if cur is None:
            cur = []
        cur.append(ch)
        escaped = False
    if cur is not None:
        args.append("".join(cur))
    return args


def _separate(buf: str, delim: str, arraylen: int) -> list[str]:
    """main/app.c __ast_app_separate_args with remove_chars=1."""
    out: list[str] = []
    s = list(buf)
    i = 0
    paren = bracket = quote = 0
    was_delim = -1
    while i < len(s) and len(out) < arraylen - 1:
        start = i
        while i < len(s):
            ch = s[i]
            if ch == "(":
                paren += 1
            elif ch == ")":
                paren = max(0, paren - 1)
            elif ch == "[":
                bracket += 1
            elif ch == "]":
                bracket = max(0, bracket - 1)
            elif ch == '"' and delim != '"':
                quote = 1 - quote
                del s[i]
                continue
            elif ch == "\\":
                del s[i]
            elif ch == delim and not paren and not quote and not bracket:
                out.append("".join(s[start:i]))
                i += 1
                was_delim = i
                break
            i += 1
        else:
            out.append("".join(s[start:i]))
    if i < len(s) or (i > 0 and i == was_delim):
        out.append("".join(s[i:]))
    return out


def _asterisk_sets(commands: list[bytes]) -> dict[str, str]:
    variables: dict[str, str] = {}
    for command in commands:
        line = command.decode()
        assert line.endswith("\n") and "\n" not in line[:-1] and len(command) <= MSET_MAX_LINE
        argv = _parse_args(line[:-1])
        if argv[:2] == ["SET", "VARIABLE"]:
            variables[argv[2]] = argv[3]
            continue
        assert argv[:2] == ["EXEC", "MSet"] and len(argv) == 3
        for pair in _separate(argv[2], ",", 99):
            name, value = _separate(pair, "=", 2)
            variables[name] = value
    return variables


def test_the_gate_answer_is_one_mset_command() -> None:
    answer = {"CALLCTL_GATE": "allow", "CALLCTL_GATE_RULE": "ok", "CALLCTL_GATE_ROUTE": "pstn",
              "CALLCTL_GATE_NUMBER": "+33123456789", "CALLCTL_GATE_EMERGENCY": "0", "CALLCTL_GATE_LOCATION": "",
              "CALLCTL_GATE_COUNTRY": "FR", "CALLCTL_GATE_REASON": "allowed"}
    commands = variable_commands(answer)
    assert len(commands) == 1 and commands[0].startswith(b'EXEC MSet "')
    assert _asterisk_sets(commands) == answer


def test_hostile_values_land_exactly() -> None:
    answer = {"CALLCTL_GATE_REASON": 'a, "b" \\ c=d (e [f é 中 ]) )) \\', "E": "", "Q": '"', "B": "\\",
              "P": "(", "S": "  x  "}
    assert _asterisk_sets(variable_commands(answer)) == answer
    alphabet = ' ,"\\=()[]{}|;:\'\tabcé中$\n\r'
    rng = random.Random(17)
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        got = _asterisk_sets(variable_commands({"CALLCTL_GATE": "deny", "CALLCTL_GATE_REASON": value}))
        # A line break cannot be carried by any AGI command: SET VARIABLE makes it a space (as always).
        assert got == {"CALLCTL_GATE": "deny", "CALLCTL_GATE_REASON": value.replace("\n", " ").replace("\r", " ")}


def test_what_mset_cannot_carry_goes_as_set_variable() -> None:
    commands = variable_commands({"A": "ok", "DOLLAR": "${EXTEN}", "NL": "a\nb", "bad name": "x"})
    assert commands[-1] == b'EXEC MSet "A=ok"\n'
    assert [c.split(b" ")[2] for c in commands[:-1]] == [b"DOLLAR", b"NL", b"bad"]
    assert variable_commands({"A": "1"}, mset=False) == [b'SET VARIABLE A "1"\n']


def test_many_or_long_values_split_into_several_lines() -> None:
    many = {f"V{i}": str(i) for i in range(MSET_MAX_PAIRS * 2 + 1)}
    commands = variable_commands(many)
    assert len(commands) == 3 and _asterisk_sets(commands) == many
    long = {f"L{i}": "x," * 900 for i in range(4)}
    commands = variable_commands(long)
    assert all(len(c) <= MSET_MAX_LINE for c in commands) and _asterisk_sets(commands) == long
    huge = {"H": "y" * (MSET_MAX_LINE + 10)}
    assert variable_commands(huge)[0].startswith(b"SET VARIABLE H ")
