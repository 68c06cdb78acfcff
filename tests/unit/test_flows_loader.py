"""The dialplan loader and validator: hostile files are refused at once, every problem comes out
in one run as FILE:LINE:COL: message, and the shipped sample dialplan passes."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from callctl.errors import DialplanError
from callctl.flows.loader import load_dialplan
from callctl.flows.model import Dialplan

REPO = Path(__file__).resolve().parents[2]
PROBLEM = re.compile(r"^[^:\s]+:\d+:\d+: .+")

COUNTRIES = """\
countries:
  FR: {name: France, timezone: Europe/Paris, language: fr,
       canvassing: {days: mon-fri, hours: ["10:00-13:00", "14:00-20:00"]}}
  GB: {name: United Kingdom, timezone: Europe/London, language: en}
  US: {name: United States, timezone: America/New_York, language: en, offered: false}
"""
PROMPTS = """\
prompts:
  hello: sound:hello-world
  bye: sound:vm-goodbye
  menu:
    en: {text: "Press 1."}
    fr: {text: "Tapez 1."}
"""
NUMBERS = """\
numbers:
  - number: "+33900000001"
    flow: main
"""
MAIN = """\
flows:
  main:
    - answer
    - play: hello
"""


def write(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    base = tmp_path / "dialplan"
    defaults: dict[str, str | bytes] = {"countries.yaml": COUNTRIES, "prompts.yaml": PROMPTS,
                                        "numbers.yaml": NUMBERS, "flows/main.yaml": MAIN}
    for name, content in {**defaults, **files}.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return base


def problems(tmp_path: Path, files: dict[str, str | bytes]) -> list[str]:
    with pytest.raises(DialplanError) as info:
        load_dialplan(write(tmp_path, files))
    for line in info.value.problems:
        assert PROBLEM.match(line), line
    return info.value.problems


def load(tmp_path: Path, files: dict[str, str | bytes]) -> Dialplan:
    return load_dialplan(write(tmp_path, files))


def one(found: list[str], fragment: str) -> str:
    hits = [p for p in found if fragment in p]
    assert hits, f"no problem containing {fragment!r} in:\n" + "\n".join(found)
    return hits[0]


# -- the shipped dialplan -----------------------------------------------------------------------


def test_shipped_dialplan_passes_check_and_routes_the_demo_numbers() -> None:
    import callctl.conference.steps  # noqa: F401 - the daemon registers its step types before loading

    plan = load_dialplan(REPO / "dialplan")
    welcome = plan.route("+33900000001")
    assert welcome is not None and welcome.flow == "welcome"
    assert [s.kind for s in plan.flows["welcome"].steps] == ["answer", "play"]
    menu = plan.route("33900000002")  # Asterisk may drop the '+'
    assert menu is not None and menu.flow == "demo-menu" and menu.number == "+33900000002"
    languages = {plan.route(n).language for n in ("+33900000003", "+442000000003")}  # type: ignore[union-attr]
    assert languages == {"fr", "en"}
    other = plan.route("+4915112345678")
    assert other is not None and other.flow == "not-in-service"
    assert re.fullmatch(r"[0-9a-f]{12}", plan.version)
    assert "numbers" in plan.summary() and plan.version in plan.summary()


def test_shipped_country_table_has_eligible_countries_and_refuses_the_us() -> None:
    plan = load_dialplan(REPO / "dialplan")
    eligible = {c.code for c in plan.countries.values() if c.emergency_eligible}
    assert eligible == {"FR", "BE", "CH", "GB", "IE", "DE", "NL", "PT", "ES", "IT", "SE", "AT"}
    assert not plan.countries["US"].offered


# -- routing ------------------------------------------------------------------------------------


def test_exact_numbers_win_then_the_most_specific_pattern(tmp_path: Path) -> None:
    plan = load(tmp_path, {"numbers.yaml": """\
        numbers:
          - {pattern: "*", flow: main, country: FR}
          - {pattern: "+3390000*", flow: main, tags: [wide]}
          - {pattern: "+339000000[1-3]X", flow: main, tags: [narrow]}
          - {number: "+33900000012", flow: main, language: en, tags: [exact]}
        """})
    assert plan.route("+33900000012").tags == ("exact",)  # type: ignore[union-attr]
    assert plan.route("+33900000013").tags == ("narrow",)  # type: ignore[union-attr]
    assert plan.route("+33900000099").tags == ("wide",)  # type: ignore[union-attr]
    assert plan.route("+4420").entry == "*"  # type: ignore[union-attr]
    route = plan.route("+33900000013")
    assert route is not None and route.language == "fr" and route.country == "FR"  # from the country table


def test_a_dialplan_is_immutable(tmp_path: Path) -> None:
    plan = load(tmp_path, {})
    with pytest.raises(AttributeError):
        plan.version = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.flows["other"] = plan.flows["main"]  # type: ignore[index]


# -- hostile files ------------------------------------------------------------------------------


def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lol.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    found = problems(tmp_path, {"bomb.yaml": "\n".join(lol) + "\n"})
    assert one(found, "too many aliases").startswith("dialplan/bomb.yaml:")


def test_python_tags_are_refused_with_their_position(tmp_path: Path) -> None:
    found = problems(tmp_path, {"evil.yaml": 'prompts:\n  x: !!python/object/apply:os.system ["id"]\n'})
    line = one(found, "python tags are never allowed")
    assert line.startswith("dialplan/evil.yaml:2:6:")


def test_a_50_mb_file_is_refused_before_parsing(tmp_path: Path) -> None:
    base = write(tmp_path, {})
    with (base / "huge.yaml").open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # sparse: nothing is really written
    with pytest.raises(DialplanError) as info:
        load_dialplan(base)
    assert one(info.value.problems, "more than the 1048576 bytes allowed").startswith("dialplan/huge.yaml:1:1:")


def test_tabs_in_indentation_are_pointed_at(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": "flows:\n  main:\n\t- answer\n"})
    assert one(found, "tab in indentation").startswith("dialplan/flows/main.yaml:3:1:")


def test_latin1_bytes_are_refused_with_line_and_column(tmp_path: Path) -> None:
    data = "prompts:\n  x:\n    fr: {text: \"Désolé\"}\n".encode("latin-1")
    found = problems(tmp_path, {"latin.yaml": data})
    assert one(found, "not UTF-8").startswith("dialplan/latin.yaml:3:18: byte 0xe9")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {"deep.yaml": "x: " + "[" * 1500 + "]" * 1500 + "\n"})
    assert any("nested" in p or "invalid YAML" in p for p in found)


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": "flows:\n  main: [answer\n"})
    assert one(found, "invalid YAML").startswith("dialplan/flows/main.yaml:")


# -- validation: every problem in one run -------------------------------------------------------


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    found = problems(tmp_path, {
        "numbers.yaml": """\
            numbers:
              - {number: "+33900000001", flow: main}
              - {number: "+33900000001", flow: sales}
              - {number: "+12125550100", flow: main}
              - {number: "33 9", flow: main, language: de}
            """,
        "flows/main.yaml": """\
            flows:
              main:
                - answer
                - name: menu
                  menu:
                    prompt: menu
                    options:
                      1: sales
                      9: sales2
                - name: sales
                  play: [hello, nosuch, "digits:{code}"]
                - hangup: maybe
                - play: bye
                - beep
            """,
    })
    one(found, "number +33900000001 is claimed twice")
    one(found, "unknown flow 'sales' (known: main)")
    one(found, "country US (United States) is not offered")
    one(found, "number '33 9' is not E.164")
    assert one(found, "routes '9' to").startswith("dialplan/flows/main.yaml:9:14: step 'menu' routes '9' to "
                                                 "unknown step 'sales2' (did you mean 'sales'?)")
    one(found, "unknown prompt 'nosuch' (known: bye, hello, menu")
    one(found, "unknown variable '{code}'")
    one(found, "unknown hangup cause 'maybe' (known: normal, busy")
    one(found, "unknown step type 'beep' (known: answer, play")
    assert len(found) >= 9


def test_unknown_keys_list_the_valid_choices(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - collect: {into: code, digitz: 4}
        """})
    line = one(found, "unknown option 'digitz' for 'collect' (did you mean 'digits'? valid: into, prompt, digits")
    assert line.startswith("dialplan/flows/main.yaml:3:29:")


def test_duplicate_keys_and_sections_are_problems(tmp_path: Path) -> None:
    found = problems(tmp_path, {"extra.yaml": "prompts:\n  hello: sound:x\nprompts: {}\nrules: {}\n"})
    one(found, "duplicate key 'prompts'")
    one(found, "prompt 'hello' is defined twice")
    one(found, "unknown section 'rules' (valid: numbers, flows, prompts, countries, calendars, switches)")


def test_a_loop_with_no_exit_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - answer
            - name: again
              play: hello
            - goto: again
        """})
    one(found, "loop 'again' -> '3:goto' in flow 'main' has no exit")


def test_a_loop_that_never_waits_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - answer
            - name: a
              when: {days: mon-fri, then: b}
            - hangup
            - name: b
              goto: a
        """})
    one(found, "never waits")


def test_unreachable_steps_are_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - answer
            - hangup
            - play: hello
        """})
    assert one(found, "step '3:play' of flow 'main' can never run").startswith("dialplan/flows/main.yaml:5:7:")


def test_menus_with_overlapping_keys_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - name: m
              menu:
                prompt: menu
                options: {1: a, 12: a, "1": a, x: a}
            - name: a
              hangup:
        """})
    one(found, "menu key '12' can never be chosen: '1' is chosen as soon as it is pressed")
    one(found, "duplicate key '1'")
    one(found, "menu key 'x' must be keys of the phone")


def test_a_prompt_missing_in_a_language_a_number_uses_is_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, {
        "prompts.yaml": 'prompts:\n  hello: sound:hello-world\n  bye: sound:vm-goodbye\n'
                        '  menu:\n    en: {text: "Press 1."}\n',
        "flows/main.yaml": "flows:\n  main:\n    - play: menu\n",
    })
    line = one(found, "prompt 'menu' has no 'fr' version")
    assert line.startswith("dialplan/flows/main.yaml:3:13:") and "+33900000001" in line


def test_patterns_that_are_equally_specific_and_overlap_are_ambiguous(tmp_path: Path) -> None:
    found = problems(tmp_path, {"numbers.yaml": """\
        numbers:
          - {pattern: "+331X", flow: main}
          - {pattern: "+33X1", flow: main}
          - {pattern: "+33[2-4]", flow: main, country: XX}
          - {pattern: "12*3", flow: main, country: FR}
        """})
    one(found, "neither is more specific")
    one(found, "country 'XX'")
    one(found, "'*' may only end a pattern")


def test_country_table_shape_is_checked(tmp_path: Path) -> None:
    found = problems(tmp_path, {"countries.yaml": COUNTRIES + """\
  ZZ: {name: Nowhere, timezone: Europe/Paris, language: fr}
  DE: {name: Germany, timezone: Mars/Olympus, language: de, emergency: {eligible: maybe, numbers: 112}}
"""})
    one(found, "country 'ZZ' is not an ISO 3166 alpha-2 code")
    one(found, "timezone 'Mars/Olympus' is unknown")
    one(found, "unknown language 'de' (known: en, fr)")
    one(found, "emergency eligible must be true or false")
    one(found, "emergency numbers must be a list")


def test_registered_step_types_validate_their_own_yaml(tmp_path: Path) -> None:
    from callctl.flows import registry

    def parse(reader: object) -> int:
        opts = reader.mapping(("seconds",), ("seconds",))  # type: ignore[attr-defined]
        return 0 if opts is None else int(reader.seconds(opts.get("seconds"), "seconds", 1.0))  # type: ignore[attr-defined]

    async def run(ctx: object, config: object) -> None:
        return None

    registry.register_step_type("pause_test", parse, run)
    try:
        plan = load(tmp_path, {"flows/main.yaml": "flows:\n  main:\n    - pause_test: {seconds: 2}\n"})
        assert plan.flows["main"].steps[0].kind == "custom"
        found = problems(tmp_path, {"flows/main.yaml": "flows:\n  main:\n    - pause_test: {secs: 2}\n"})
        one(found, "unknown option 'secs' for 'pause_test' (did you mean 'seconds'? valid: seconds)")
    finally:
        registry.unregister("pause_test")
