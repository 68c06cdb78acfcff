"""`callctl dialplan graph`: every shipped flow and a generated large dialplan drawn, parsed back, rendered."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from callctl.flows import graph
from callctl.flows.cli import _load
from callctl.flows.loader import load_dialplan
from callctl.flows.model import Dialplan, Flow, Goto, Play, Pos

REPO = Path(__file__).resolve().parents[2]


def shipped() -> Dialplan:
    from callctl.config import Settings

    return _load(REPO / "dialplan", Settings())


def parsed(plan: Dialplan, **kw: object) -> dict[str, object]:
    """The graph laid out by Graphviz and read back as JSON: what dot understood of our DOT."""
    out: dict[str, object] = json.loads(graph.build(plan, **kw).pipe(format="json"))  # type: ignore[arg-type]
    return out


def edges_by_label(doc: dict[str, object]) -> list[tuple[str, str, str]]:
    names = {o["_gvid"]: o["label"] for o in doc.get("objects", []) if "label" in o}  # type: ignore[union-attr]
    return [(names[e["tail"]], names[e["head"]], e.get("label", ""))  # type: ignore[index,union-attr]
            for e in doc.get("edges", [])]  # type: ignore[union-attr]


def test_every_shipped_flow_is_drawn_with_its_keys_outcomes_and_gotos() -> None:
    plan = shipped()
    edges = edges_by_label(parsed(plan))
    menu = "main\n(menu)\ndemo-menu, invalid, no-input"
    assert (menu, "message\n(play)\ncongrats", "key 1") in edges
    assert (menu, "ask-code\n(collect)\nenter-code, invalid, no-input", "key 2") in edges
    assert (menu, "bye\n(play)\ngoodbye", "3 failed attempts") in edges
    assert ("4:goto", "bye\n(play)\ngoodbye", "goto") in {e for e in edges if e[0] == "4:goto"} or any(
        e[0] == "4:goto" and e[2] == "goto" for e in edges)
    assert any(e[0].startswith("2:when") and e[2].startswith("open: ") for e in edges)
    assert any(e[0].startswith("2:when") and e[2] == "closed" for e in edges)
    # dial outcomes that lead to one step are one arrow
    assert any(e[2] == "busy / noanswer / congestion / failed" for e in edges)
    # every number points at the first step of its flow
    for entry in plan.numbers:
        assert any(e[0].startswith(entry.text + "\n") for e in edges), entry.text
    # one node per step of every flow (plus the numbers and the flows' ends)
    for flow in plan.flows.values():
        for step in flow.steps:
            assert any(step.label == e[0].split("\n")[0] or step.label == e[1].split("\n")[0] for e in edges) \
                or len(flow.steps) == 1, (flow.name, step.label)


def test_svg_of_every_shipped_flow_is_valid_xml() -> None:
    plan = shipped()
    for name in plan.flows:
        svg = graph.build(plan, flow=name).pipe(format="svg")
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        assert f"flow {name}" in {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}


def test_names_with_quotes_and_markup_cannot_break_the_graph() -> None:
    # The loader only admits letters, digits, - and _ in names; the graph must not rely on it.
    pos = Pos("flows/x.yaml", 1, 1)
    odd = 'a"b -> c:d <script>'
    steps = (Play(name=odd, pos=pos, index=1, prompts=('p"<b>',)), Goto(name=None, pos=pos, index=2, target=odd))
    plan = Dialplan(version="v", files=(), numbers=(), flows={'x"y': Flow('x"y', steps, pos)}, prompts={},
                    countries={})
    svg = graph.build(plan).pipe(format="svg")
    ET.fromstring(svg)  # still valid XML: the markup is escaped
    assert b"<script>" not in svg
    edges = edges_by_label(parsed(plan))
    assert ("2:goto", f'{odd}\n(play)\np"<b>', "goto") in edges


def test_a_large_generated_dialplan_is_drawn(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    shutil.copy(REPO / "dialplan" / "countries.yaml", tmp_path)
    shutil.copy(REPO / "dialplan" / "prompts.yaml", tmp_path)
    flows, numbers = [], []
    for f in range(60):
        numbers.append(f'  - number: "+339000{f:05d}"\n    flow: f{f}\n')
        nxt = f"    - flow: f{f + 1}\n" if f < 59 else "    - hangup\n"
        flows.append(f"  f{f}:\n    - answer\n    - name: m\n      menu:\n        prompt: demo-menu\n"
                     f"        options: {{1: a, 2: b, 3: m}}\n        on_failure: b\n"
                     f"    - name: a\n      play: congrats\n    - goto: b\n"
                     f"    - name: b\n      play: goodbye\n{nxt}")
    (tmp_path / "numbers.yaml").write_text("numbers:\n" + "".join(numbers))
    (tmp_path / "flows" / "many.yaml").write_text("flows:\n" + "".join(flows))
    plan = load_dialplan(tmp_path)
    doc = parsed(plan)
    edges = edges_by_label(doc)
    assert sum(1 for e in edges if e[2] == "key 3") == 60
    assert sum(1 for e in edges if e[2] == "continue in flow") == 59
    ET.fromstring(graph.build(plan).pipe(format="svg"))


def test_edge_counts_from_traces_label_the_edges_taken() -> None:
    plan = shipped()
    menu = [("demo-menu", "1:answer"), ("demo-menu", "main"), ("demo-menu", "message"),
            ("demo-menu", "4:goto"), ("demo-menu", "bye"), ("demo-menu", "8:hangup")]
    other = [("demo-menu", "1:answer"), ("demo-menu", "main"), ("demo-menu", "bye"), ("demo-menu", "8:hangup")]
    counts = graph.edge_counts([menu, menu, other])
    assert counts[("demo-menu", "main", "demo-menu", "message")] == 2
    assert counts[("demo-menu", "main", "demo-menu", "bye")] == 1
    assert counts[("demo-menu", "1:answer", "demo-menu", "main")] == 3
    edges = edges_by_label(parsed(plan, flow="demo-menu", counts=counts))
    assert any(e[2] == "key 1 (2 calls)" for e in edges)
    assert any(e[2] == "3 failed attempts (1 calls)" for e in edges)
    assert any(e[2] == "key 2 (0 calls)" for e in edges)


def test_cli_writes_svg_png_and_dot_and_refuses_an_unknown_flow(tmp_path: Path) -> None:
    for ext, magic in (("svg", b"<?xml"), ("png", b"\x89PNG"), ("dot", b"digraph")):
        out = tmp_path / f"plan.{ext}"
        done = subprocess.run([sys.executable, "-m", "callctl", "dialplan", "graph", str(REPO / "dialplan"),
                               "-o", str(out)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes().startswith(magic)
    done = subprocess.run([sys.executable, "-m", "callctl", "dialplan", "graph", str(REPO / "dialplan"),
                           "--flow", "nope"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "no flow named 'nope'" in done.stderr and "demo-menu" in done.stderr
    assert "Traceback" not in done.stderr
