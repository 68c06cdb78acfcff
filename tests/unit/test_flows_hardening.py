"""Dialplan checks found wanting by outside testing (issue 15, items 10-14): loops across flows,
the simulator's step limit, a budget for the whole directory, symlinks leaving it, and deep
nesting reported where it happens."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from callctl.config import Settings
from callctl.errors import DialplanError
from callctl.flows import files as files_mod
from callctl.flows import loader as loader_mod
from callctl.flows import yamlsafe
from callctl.flows.loader import load_dialplan
from tests.unit.test_flows_engine import parse
from tests.unit.test_flows_loader import one, problems, write

# -- 10. loops across flows ---------------------------------------------------------------------


def test_a_loop_across_two_flows_with_no_exit_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {
        "numbers.yaml": 'numbers:\n  - {number: "+33900000001", flow: a}\n',
        "flows/main.yaml": """\
            flows:
              main:
                - answer
              a:
                - answer
                - play: hello
                - flow: b
              b:
                - play: hello
                - flow: a
            """,
    })
    line = one(found, "has no exit")
    assert "flow 'a'" in line and "flow 'b'" in line, line
    assert line.startswith("dialplan/flows/main.yaml:"), line


def test_a_loop_across_flows_that_never_waits_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {
        "numbers.yaml": 'numbers:\n  - {number: "+33900000001", flow: a}\n',
        "flows/main.yaml": """\
            flows:
              main:
                - answer
              a:
                - answer
                - name: again
                  when: {days: mon-fri, then: out}
                - flow: b
                - name: out
                  hangup:
              b:
                - set: {x: "1"}
                - flow: a
            """,
    })
    one(found, "never waits")


def test_flows_that_hand_over_without_coming_back_pass(tmp_path: Path) -> None:
    load_dialplan(write(tmp_path, {
        "numbers.yaml": 'numbers:\n  - {number: "+33900000001", flow: a}\n',
        "flows/main.yaml": """\
            flows:
              main:
                - answer
              a:
                - answer
                - flow: b
              b:
                - name: menu
                  menu: {prompt: hello, options: {1: menu, 2: bye}, on_failure: menu}
                - name: bye
                  flow: main
            """,
    }))


# -- 11. the simulator's step limit --------------------------------------------------------------

LOOPING = """\
    flows:
      main:
        - answer
        - name: menu
          menu: {prompt: hello, options: {1: bye}, on_failure: again}
        - name: again
          play: hello
        - goto: menu
        - name: bye
          hangup:
    """


def test_simulate_at_the_step_limit_prints_one_line_with_the_loop(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path, {"flows/main.yaml": LOOPING})
    args = parse("dialplan", "simulate", "--to", "+33900000001", str(base))
    assert args.func(args, Settings()) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    last = captured.out.strip().splitlines()[-1]
    assert "step limit" in last, last
    assert "'menu' -> 'again' -> '4:goto' -> 'menu'" in last, last
    assert "last step '4:goto'" in last or "last step 'menu'" in last or "last step 'again'" in last, last


async def test_the_step_limit_names_the_last_step_that_ran(tmp_path: Path) -> None:
    from callctl.flows.engine import MAX_STEPS, run_flow
    from callctl.flows.simulate import FakeCall

    plan = load_dialplan(write(tmp_path, {"flows/main.yaml": LOOPING}))
    route = plan.route("+33900000001")
    assert route is not None
    labels: list[str] = []
    result = await run_flow(plan, route, FakeCall(), trace=lambda flow, step, why: labels.append(step))
    assert result.outcome == "error"
    assert result.steps_run == MAX_STEPS
    assert result.last_step == labels[-1]
    assert result.error is not None and "going round 'menu' -> 'again'" in result.error


# -- 12. a budget for the whole directory ---------------------------------------------------------


def test_a_directory_over_its_byte_budget_is_refused_before_parsing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = write(tmp_path, {})
    filler = "# " + "x" * 1000 + "\n"
    for i in range(8):
        (base / f"big{i}.yaml").write_text(filler * 1000, encoding="utf-8")  # ~1 MiB each
    parsed: list[str] = []
    real_parse = yamlsafe.parse
    monkeypatch.setattr(loader_mod, "parse", lambda text, rel, p: parsed.append(rel) or real_parse(text, rel, p))
    with pytest.raises(DialplanError) as info:
        load_dialplan(base)
    line = one(info.value.problems, "bytes in all")
    assert line.startswith("dialplan:1:1:"), line
    assert parsed == []


def test_a_directory_with_too_many_files_is_refused(tmp_path: Path) -> None:
    base = write(tmp_path, {})
    for i in range(files_mod.MAX_FILES + 1):
        (base / f"f{i:04}.yaml").write_text("prompts: {}\n", encoding="utf-8")
    with pytest.raises(DialplanError) as info:
        load_dialplan(base)
    one(info.value.problems, f"more than the {files_mod.MAX_FILES} files allowed")


def test_the_node_budget_is_shared_by_all_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsafe, "MAX_TOTAL_NODES", 400)
    files = {f"p{i}.yaml": "prompts:\n" + "".join(f"  p{i}-{j}: sound:x\n" for j in range(60)) for i in range(5)}
    found = problems(tmp_path, files)
    line = one(found, "values in all")
    assert "dialplan/p" in line


# -- 13. symlinks leaving the directory -----------------------------------------------------------


def test_a_symlink_out_of_the_directory_is_refused_without_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("prompts:\n  root-password-is-hunter2: sound:x\n", encoding="utf-8")
    base = write(tmp_path, {})
    os.symlink(secret, base / "passwd.yaml")
    with pytest.raises(DialplanError) as info:
        load_dialplan(base)
    text = "\n".join(info.value.problems)
    assert "hunter2" not in text
    line = one(info.value.problems, "leaves the dialplan directory")
    assert line.startswith("dialplan/passwd.yaml:1:1:") and str(secret) in line, line


def test_a_symlinked_folder_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.yaml").write_text("prompts:\n  leaked-secret: sound:x\n", encoding="utf-8")
    base = write(tmp_path, {})
    os.symlink(outside, base / "more")
    with pytest.raises(DialplanError) as info:
        load_dialplan(base)
    assert "leaked-secret" not in "\n".join(info.value.problems)
    assert one(info.value.problems, "leaves the dialplan directory").startswith("dialplan/more:1:1:")


def test_a_symlink_inside_the_directory_is_read_once(tmp_path: Path) -> None:
    base = write(tmp_path, {"extra/more.yaml": "prompts:\n  more: sound:x\n"})
    os.symlink(base / "extra" / "more.yaml", base / "alias.yaml")
    os.symlink(base / "extra", base / "extra-again")
    plan = load_dialplan(base)
    assert "more" in plan.prompts


def test_echoed_values_are_bounded_and_control_characters_escaped(tmp_path: Path) -> None:
    found = problems(tmp_path, {"odd.yaml": "numbers:\n  - {number: \"\\e[31m" + "9" * 5000 + "\", flow: main}\n"})
    line = one(found, "is not E.164")
    assert "\x1b" not in line and len(line) < 600, line


# -- 14. nesting too deep is reported where it happens ----------------------------------------------


def test_deep_nesting_is_reported_at_its_place(tmp_path: Path) -> None:
    text = "prompts:\n  ok: sound:x\nflows:\n  main:\n    - " + "[" * 1500 + "]" * 1500 + "\n"
    found = problems(tmp_path, {"deep.yaml": text})
    line = one(found, "nested more than")
    file, line_no, col, _ = line.split(":", 3)
    assert file == "dialplan/deep.yaml" and line_no == "5", line
    assert int(col) > 7, line


def test_deep_block_nesting_is_reported_at_its_place(tmp_path: Path) -> None:
    lines = ["flows:"] + [" " * (2 * i) + f"k{i}:" for i in range(1, 200)] + [" " * 400 + "v"]
    found = problems(tmp_path, {"deep.yaml": "\n".join(lines) + "\n"})
    line = one(found, "nested more than")
    assert not line.startswith("dialplan/deep.yaml:1:1:"), line


def _dedent(text: str) -> str:
    return textwrap.dedent(text)
