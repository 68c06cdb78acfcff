"""A cluster of Asterisk nodes behind Kamailio (docs/scaling.md): Kamailio rendered from kamailio/ and
run in the foreground, and `make cluster` (PostgreSQL, Kamailio, NODES Asterisk nodes, one engine each).

    python -m scripts.cluster render-kamailio --node 10.0.0.11:5060 --node 10.0.0.12:5060 --out DIR \
        --carrier-network 198.51.100.0/28 [--config FILE]      # also DIR/pjsip_carrier.conf for every node
    python -m scripts.cluster run --nodes 2          # make cluster
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callctl.fraud.bruteforce import BlockPolicy
from scripts.devstack import (
    CARRIER_HEADER,
    REPO,
    AsteriskInstance,
    carrier_identify_conf,
    check_carrier_token,
    ensure_root,
)

KAMAILIO_SRC = REPO / "kamailio"
MODULE_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DEFAULT_RUNTIME = Path(os.environ.get("CALLCTL_KAMAILIO_DIR", "/var/lib/callctl/kamailio"))
# Where `make cluster`'s and the tests' carriers (SIPp, a local gateway) send from.
LOOPBACK_CARRIERS = ("127.0.0.0/8",)


@dataclass
class KamailioInstance:
    """One Kamailio in front of ``nodes`` (``host:port`` of each node's SIP), its files under ``workdir``."""

    workdir: Path
    nodes: list[str]
    listen_address: str = "127.0.0.1"
    listen_port: int = 5060
    probe_interval_s: int = 1
    probe_timeout_ms: int = 2000  # also the wait for a node's first reply to an INVITE before failing over
    children: int = 2
    debug: int = 1
    # SIP brute force at the edge: the engines' own numbers (callctl.fraud.settings.block_policy(settings)).
    guard: BlockPolicy = field(default_factory=BlockPolicy)
    flood_requests: int = 64  # per 2 s from one untrusted address (pike), then dropped while it lasts
    # The only sources of requests that are neither a SIP user's nor a node's (the carriers' SBCs): the nodes
    # take such a request as from their trusted carrier endpoint; from anywhere else Kamailio answers 403.
    carrier_networks: tuple[str, ...] = LOOPBACK_CARRIERS
    # Added to those requests alone (CARRIER_HEADER), the token the nodes identify their carrier by: the cluster's
    # secret (carrier_token_file), the same in every node's pjsip_carrier.conf. Random when not given (nodes that
    # still trust this proxy's address, as the failover tests' and the benchmark's, ignore it).
    carrier_token: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    proc: subprocess.Popen[bytes] | None = None
    _log: Path = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.workdir / "kamailio.log"

    @property
    def config_file(self) -> Path:
        return self.workdir / "kamailio.cfg"

    @property
    def ctl_socket(self) -> str:
        return f"unix:{self.workdir / 'kamailio_ctl'}"

    @property
    def log_file(self) -> Path:
        return self._log

    def dispatcher_list(self) -> str:
        """Set 1: the nodes, in the order given (round-robin starts at the first)."""
        lines = ["# setid destination flags priority attributes (rendered by scripts/cluster.py)"]
        for n, node in enumerate(self.nodes):
            lines.append(f"1 sip:{node} 0 {len(self.nodes) - n} name=node{n + 1}")
        return "\n".join(lines) + "\n"

    def render(self) -> None:
        """kamailio.cfg and dispatcher.list into ``workdir``."""
        if not self.nodes:
            raise ValueError("a Kamailio front door needs at least one node (host:port)")
        for node in self.nodes:
            if not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", node):
                raise ValueError(f"node {node!r}: expected host:port (e.g. 10.0.0.11:5060)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        values = {
            "LISTEN_ADDRESS": self.listen_address, "LISTEN_PORT": str(self.listen_port),
            "DISPATCHER_LIST": str(self.workdir / "dispatcher.list"), "RUNTIME_DIR": str(self.workdir),
            "PROBE_INTERVAL_S": str(self.probe_interval_s), "PROBE_TIMEOUT_MS": str(self.probe_timeout_ms),
            "INVITE_TIMEOUT_MS": str(self.probe_timeout_ms), "CHILDREN": str(self.children),
            "DEBUG": str(self.debug), "MODULE_DIR": MODULE_DIR, **self.guard_values(), **self.carrier_values(),
            "CARRIER_HEADER": CARRIER_HEADER, "CARRIER_TOKEN": check_carrier_token(self.carrier_token, "carrier token"),
        }
        text = (KAMAILIO_SRC / "kamailio.cfg").read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
        if left:
            raise RuntimeError(f"{KAMAILIO_SRC / 'kamailio.cfg'}: unfilled placeholder(s) {', '.join(left)}")
        write_secret(self.config_file, text)  # the carrier token: readable by Kamailio's user only
        (self.workdir / "dispatcher.list").write_text(self.dispatcher_list())

    def guard_values(self) -> dict[str, str]:
        """The brute-force placeholders: whole seconds (Kamailio counts in seconds; a fraction rounds up)."""
        g = self.guard
        checks = [f'\tif (is_in_subnet("$si", "{net}")) {{\n\t\t$var(trusted) = 1;\n\t}}' for net in g.trusted]
        return {"BLOCK_FAILURES": str(g.failures), "BLOCK_SLOTS": str(g.failures - 1),
                "BLOCK_WINDOW_S": str(math.ceil(g.window_s)), "BLOCK_S": str(math.ceil(g.block_s)),
                "BLOCK_MAX_S": str(math.ceil(g.max_block_s)), "FLOOD_REQUESTS": str(self.flood_requests),
                "TRUSTED_CHECKS": "\n".join(checks) or "\t# (no trusted network)"}

    def carrier_values(self) -> dict[str, str]:
        """The carriers' networks, checked and normalised (ValueError naming a bad one), one test each."""
        nets = []
        for net in self.carrier_networks:
            try:
                nets.append(str(ipaddress.ip_network(net.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"carrier network {net!r}: not an IP address or network "
                                 "(e.g. 198.51.100.7 or 198.51.100.0/28)") from None
        checks = [f'\tif (is_in_subnet("$si", "{net}")) {{\n\t\t$var(carrier) = 1;\n\t}}' for net in nets]
        return {"CARRIER_NETWORKS": ", ".join(nets) or "none", "CARRIER_CHECKS": "\n".join(checks)
                or "\t# (no carrier network: only SIP users and the nodes)"}

    def check(self) -> None:
        """Kamailio's own syntax check of the rendered configuration."""
        self.render()
        res = subprocess.run(["kamailio", "-c", "-f", str(self.config_file), "-Y", str(self.workdir)],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"{self.config_file}: kamailio -c failed: {res.stderr.strip()[-2000:]}")

    def start(self, *, wait_s: float = 20.0) -> None:
        self.render()
        log = open(self._log, "ab")
        # -DD: no daemon (we own the process); -E: log to stderr (the log file); -Y: own runtime dir.
        self.proc = subprocess.Popen(
            ["kamailio", "-DD", "-E", "-f", str(self.config_file), "-Y", str(self.workdir), "-w", str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_for_rpc(wait_s)

    def rpc(self, *command: str) -> str:
        res = subprocess.run(["kamcmd", "-s", self.ctl_socket, *command], capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(command)}: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def wait_for_rpc(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.proc.returncode}; see {self._log}")
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.rpc("core.version")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"kamailio control socket {self.ctl_socket} not ready after {wait_s} s")
            time.sleep(0.1)

    def node_states(self) -> dict[str, str]:
        """Each node's dispatcher flags (``AP``: active and probed, ``IP``: inactive, probing)."""
        out = self.rpc("dispatcher.list")
        states: dict[str, str] = {}
        for uri, flags in re.findall(r"URI:\s*sip:(\S+)\s+FLAGS:\s*(\w+)", out):
            states[uri] = flags
        return states

    def active_nodes(self) -> set[str]:
        return {node for node, flags in self.node_states().items() if flags.startswith("A")}

    def stats(self) -> dict[str, int]:
        """Kamailio's core statistics (``core:rcv_requests`` ...), as numbers."""
        out = self.rpc("stats.get_statistics", "all")
        return {k: int(v) for k, v in re.findall(r"([\w:]+) = (\d+)", out)}

    def cpu_s(self) -> float:
        """User + system CPU of every Kamailio process of this instance (main and children)."""
        if self.proc is None:
            return 0.0
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in _process_tree(self.proc.pid):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self, *, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def node_instance(name: str, n: int, **kw: object) -> AsteriskInstance:
    """Asterisk node number ``n`` (1, 2, ...): its own entity id, refusing new calls (503 before
    answer) while its engine is down, so that Kamailio tries the next node."""
    return AsteriskInstance(name, entity_id=f"02:00:00:00:00:{n:02x}", refuse_when_engine_down=True,
                            **kw)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render-kamailio", help="write kamailio.cfg and dispatcher.list for given nodes")
    render.add_argument("--node", action="append", required=True, help="a node's SIP address, host:port")
    render.add_argument("--listen", default="127.0.0.1:5060", help="Kamailio's address, host:port")
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--carrier-network", action="append", default=None, metavar="NETWORK",
                        help="a carrier SBC's address or network (repeat for each); requests that are not a SIP "
                             "user's nor a node's are refused (403) from anywhere else (default: "
                             f"{', '.join(LOOPBACK_CARRIERS)}, the local test carriers)")
    render.add_argument("--config", type=Path, default=None,
                        help="the engines' callctl settings file (default: as callctl finds it, with CALLCTL_* "
                             "variables): its sip_block_* and sip_trusted_networks become Kamailio's bans")
    run = sub.add_parser("run", help="make cluster: PostgreSQL, Kamailio, the nodes and their engines")
    run.add_argument("--nodes", type=int, default=2)
    run.add_argument("--state", type=Path, default=REPO / ".state" / "cluster")
    args = parser.parse_args(argv)
    if args.command == "render-kamailio":
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--listen {args.listen!r}: expected host:port")
        from callctl.errors import CallctlError
        from callctl.fraud.settings import block_policy

        try:
            guard = block_policy(edge_settings(path=args.config))
        except CallctlError as exc:
            parser.error(exc.message)
        carriers = tuple(args.carrier_network or LOOPBACK_CARRIERS)
        try:
            token = carrier_token_file(args.out / "carrier-token")
            kam = KamailioInstance(args.out, args.node, listen_address=host, listen_port=int(port), guard=guard,
                                   carrier_networks=carriers, carrier_token=token)
            kam.render()
        except ValueError as exc:
            parser.error(str(exc))
        node_conf = args.out / "pjsip_carrier.conf"
        write_secret(node_conf, carrier_identify_conf(token))
        print(kam.config_file)
        print(f"Each node behind it: {node_conf} in its Asterisk configuration folder, in place of "
              "asterisk-conf/pjsip_carrier.conf (a carrier is known by Kamailio's header with the cluster's token in "
              f"{args.out / 'carrier-token'}, never by Kamailio's address); keep both readable by Kamailio and "
              "Asterisk only.", file=sys.stderr)
        if args.carrier_network is None:
            print(f"Carriers accepted only from {', '.join(LOOPBACK_CARRIERS)} (this host): list your carriers' SBC "
                  "addresses with --carrier-network.", file=sys.stderr)
        try:
            example = trusted_with(",".join(str(n) for n in guard.trusted), host)
        except ValueError:  # a host name: the engines need the address the nodes will see
            example = "<the existing networks>,<Kamailio's address>"
        print(f"Each engine behind it: sip_trusted_networks must include {host} (Kamailio bans at the edge), e.g. "
              f"{example}; kamailio_ctl: the address of its ctl socket, for `callctl fraud blocks` / `unblock`.",
              file=sys.stderr)
        return 0
    if not 1 <= args.nodes <= 8:
        parser.error(f"--nodes {args.nodes}: between 1 and 8")
    return run_cluster(args.nodes, args.state.resolve())


def run_cluster(count: int, state: Path) -> int:
    """`make cluster`: PostgreSQL, Kamailio on 127.0.0.1:5060 (another port if taken), ``count`` nodes and
    their engines, the demo banner of `make run`; Ctrl-C (or SIGTERM) stops all of it."""
    from callctl.conference.affinity import nodes_conf
    from callctl.fraud.settings import block_policy
    from scripts import run as single

    if not kamailio_available():
        print("make cluster: kamailio not found (make deps installs it)", file=sys.stderr)
        return 1
    from callctl.errors import CallctlError

    try:  # the engines' settings, before anything starts: a broken file is one line, not a traceback
        block_policy(edge_settings())
    except CallctlError as exc:
        print(f"make cluster: {exc.message}", file=sys.stderr)
        return 2
    state.mkdir(parents=True, exist_ok=True)
    try:
        token = carrier_token_file(state / "carrier-token")
    except ValueError as exc:
        print(f"make cluster: {exc}", file=sys.stderr)
        return 2
    py = sys.executable
    own_pg = "CALLCTL_DATABASE_URL" not in os.environ
    nodes: list[AsteriskInstance] = []
    engines: list[subprocess.Popen[bytes]] = []
    kamailio: KamailioInstance | None = None
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True
        for engine in engines:
            engine.send_signal(signal.SIGTERM)

    try:
        base = single.start_database(py, state, own_pg)
        ensure_root()
        demo_password = single._secret(state / "demo-sip-password", 9)
        for n in range(1, count + 1):
            # Node n's ports (each taken only when free, else any free one): away from `make run`'s defaults.
            # Its SIP on an address of its own (127.0.1.n): the other nodes know it by address alone (the
            # inter-node trunk of conference affinity, docs/conferences.md), callers reach it via Kamailio.
            node = node_instance(
                f"cluster-{n}", n, sip_bind=f"127.0.1.{n}", http_port=single._port(8088 + 100 * n),
                sip_port=single._port(6060 + 100 * n, udp_too=True), tls_port=single._port(6061 + 100 * n),
                rtp_start=23000 + 1000 * (n - 1), rtp_end=23999 + 1000 * (n - 1),
                ari_password=single._secret(state / f"ari-password-{n}", 18), demo_sip_password=demo_password,
                ami_port=single._port(5038 + 100 * n), ami_password=single._secret(state / f"ami-password-{n}", 18),
                agi_url=f"agi://127.0.0.1:{single._port(4573 + 100 * n)}", carrier_token=token)
            node.use_database(base["CALLCTL_DATABASE_URL"])
            nodes.append(node)
        for n, node in enumerate(nodes, start=1):  # each node lists the others as peers
            node.extra_conf["pjsip_nodes.conf"] = nodes_conf(
                {f"node{m}": f"{peer.sip_bind}:{peer.sip_port}" for m, peer in enumerate(nodes, start=1) if m != n})
        subprocess.run([py, "-m", "callctl", "dialplan", "render-prompts", str(REPO / "dialplan"),
                        "--out", str(nodes[0].sounds_dir)], check=True, cwd=REPO)
        for node in nodes:
            node.start()
        settings = edge_settings(base)
        kamailio = KamailioInstance(state / "kamailio", [f"{node.sip_bind}:{node.sip_port}" for node in nodes],
                                    listen_port=single._port(5060, udp_too=True), debug=2,
                                    guard=block_policy(settings), carrier_token=token)
        kamailio.start()
        envs = []
        for n, node in enumerate(nodes, start=1):
            env = dict(base, **single.engine_env(node, state / f"node{n}", http_port=single._port(8099 + 100 * n),
                                                 space_port=single._port(8098 + 100 * n)))
            env.update(CALLCTL_NODE_ID=f"node{n}", CALLCTL_AGI_LISTEN=node.agi_url.removeprefix("agi://"),
                       # one recordings folder for every engine: the stand-in for the shared storage a
                       # cluster needs (docs/scaling.md, "Recordings"), so purge/export/delete see every file
                       CALLCTL_RECORDINGS_DIR=str(state / "recordings"),
                       # every request reaches the nodes from Kamailio: never block it (it bans at the edge)
                       CALLCTL_SIP_TRUSTED_NETWORKS=trusted_with(settings.sip_trusted_networks,
                                                                 kamailio.listen_address),
                       CALLCTL_KAMAILIO_CTL=kamailio.ctl_socket)
            envs.append(env)
        single.write_cli_settings(envs[0], "make cluster")
        demo = single._demo(py, envs[0], state)
        front = dataclasses.replace(nodes[0], sip_port=kamailio.listen_port)  # callers go through Kamailio
        print(single._banner(front, envs[0], single.dialplan_summary(py, envs[0]), demo), flush=True)
        print(_cluster_lines(kamailio, nodes, envs), flush=True)
        signal.signal(signal.SIGTERM, on_term)
        for env in envs:
            engines.append(subprocess.Popen([py, "-m", "callctl", "run"], env=env, cwd=REPO))
        try:
            while not stop and all(engine.poll() is None for engine in engines):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"make cluster: step failed: {' '.join(map(str, exc.cmd))} (exit {exc.returncode})", file=sys.stderr)
        return 1
    finally:
        for engine in engines:
            if engine.poll() is None:
                engine.send_signal(signal.SIGTERM)
        for engine in engines:
            with contextlib.suppress(subprocess.TimeoutExpired):
                engine.wait(timeout=40)
        if kamailio is not None:
            kamailio.stop()
        for node in nodes:
            node.stop()
        if own_pg:
            single.stop_database(py, state)
        print("make cluster: everything stopped.", flush=True)


def _cluster_lines(kamailio: KamailioInstance, nodes: list[AsteriskInstance], envs: list[dict[str, str]]) -> str:
    lines = [f" Cluster: Kamailio on {kamailio.listen_address}:{kamailio.listen_port} (SIP for callers; "
             f"state: kamcmd -s {kamailio.ctl_socket} dispatcher.list)"]
    for n, (node, env) in enumerate(zip(nodes, envs, strict=True), start=1):
        lines.append(f"   node{n}: Asterisk SIP {node.sip_bind}:{node.sip_port}, ARI {node.ari_url}, "
                     f"engine http://{env['CALLCTL_HTTP_LISTEN']}/readyz")
    lines.append(" A node whose engine stops refuses new calls (503) and Kamailio sends them to another node.")
    lines.append(f" Softphones register to Kamailio ({kamailio.listen_address}:{kamailio.listen_port}), never to a "
                 "node: Kamailio picks the user's home node and adds a Path, so every node reaches the phone "
                 "through it (docs/scaling.md).")
    g = kamailio.guard
    lines.append(f" SIP brute force: Kamailio bans an address after {g.failures} failed authentications in "
                 f"{g.window_s:g} s ({g.block_s:g} s, doubled per repeat); `callctl fraud blocks` lists the bans, "
                 "`callctl fraud unblock IP` lifts them (docs/security.md).")
    carriers = kamailio.carrier_values()["CARRIER_NETWORKS"]
    lines.append(f" Carriers: a call that is not from a SIP user is accepted only from {carriers}"
                 " (403 from anywhere else: render-kamailio --carrier-network); the nodes know it by Kamailio's "
                 f"{CARRIER_HEADER} header with the cluster's token, never by Kamailio's address.")
    return "\n".join(lines) + "\n"


def carrier_token_file(path: Path) -> str:
    """The cluster's carrier token: made once in ``path`` (readable by its owner only), read from it afterwards, so
    that Kamailio and every node agree across restarts. ValueError naming the file when it holds anything else."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(20) + "\n")
    return check_carrier_token(path.read_text().strip(), str(path))


def write_secret(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only, from the moment it exists."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def edge_settings(env: dict[str, str] | None = None, path: Path | None = None) -> Any:
    """The callctl settings the engines read (settings file, CALLCTL_* environment): Kamailio bans with the
    same numbers."""
    from callctl.config import load_settings

    return load_settings(path, env)


def trusted_with(networks: str, proxy: str) -> str:
    """``sip_trusted_networks`` with the proxy's address added (once): what each engine behind it must trust."""
    host = ipaddress.ip_network(proxy, strict=False)
    entries = [e.strip() for e in networks.split(",") if e.strip()]
    if any(ipaddress.ip_network(e, strict=False) == host for e in entries):
        return ",".join(entries)
    return ",".join([*entries, str(host)])


def kamailio_available() -> bool:
    return shutil.which("kamailio") is not None and shutil.which("kamcmd") is not None


if __name__ == "__main__":
    sys.exit(main())
