"""Development stack: an Asterisk 22 instance inside the cached Debian sid root, configured from
asterisk-conf/, on ports of our choosing. Used by `make run` (scripts/run.py) and by the tests.

Each instance keeps its configuration and state under ROOT/var/lib/callctl-instances/NAME, so a
`make run` stack and a test stack can run side by side on different ports.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF_SRC = REPO / "asterisk-conf"
DEFAULT_ROOT = Path(os.environ.get("CALLCTL_ASTERISK_ROOT", "/var/cache/callctl/asterisk-root"))
# Behind a cluster's Kamailio, the nodes know a carrier's request by this header with the cluster's token, which
# Kamailio adds to the requests from the carriers' networks only (kamailio/kamailio.cfg route[CARRIER]).
CARRIER_HEADER = "X-Callctl-Carrier"
_CARRIER_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def _listen_ports() -> range:
    """Ports above the kernel's ephemeral range (ip_local_port_range): a port picked here and bound a few
    seconds later by a starting process cannot meanwhile become the local port of someone's outgoing
    connection (that race made a restarted daemon fail to bind once under heavy load)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(0)
    if high <= 64000:
        return range(high + 1, 65535)
    return range(10000, low) if low > 11000 else range(0)


def _worker_share(ports: range) -> range:
    """This pytest-xdist worker's slice of ``ports`` (gw0 the first, gw1 the next...): two workers never
    hand out the same port, so one cannot take the port another picked seconds before its daemon binds it
    (a restarted daemon failed to bind its AGI port once in CI)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    if not worker.startswith("gw") or not worker[2:].isdigit() or not count.isdigit() or int(count) <= 1:
        return ports
    size = len(ports) // int(count)
    index = int(worker[2:]) % int(count)
    return ports[index * size:(index + 1) * size]


_LISTEN_PORTS = _worker_share(_listen_ports())
_HANDED_OUT: set[int] = set()  # this process's recent picks: not handed out again until half are used


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free now on 127.0.0.1 for a listener, outside the ephemeral range when there is room."""
    for _ in range(200 if _LISTEN_PORTS else 0):
        port = random.choice(_LISTEN_PORTS)
        if port in _HANDED_OUT:
            continue
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))
            if len(_HANDED_OUT) >= len(_LISTEN_PORTS) // 2:
                _HANDED_OUT.clear()
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def handed_out(ports: range) -> bool:
    """Whether free_port gave any of ``ports`` to someone in this process lately."""
    return any(p in _HANDED_OUT for p in ports)


def hand_out(ports: range) -> None:
    """Ports a caller found free and will bind soon (SIPp's media ports beside the one free_port gave):
    not handed out again by free_port meanwhile."""
    _HANDED_OUT.update(ports)


def free_port_pair() -> int:
    """A port free on both UDP and TCP (SIP listens on both)."""
    for _ in range(50):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free UDP+TCP port pair found")


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    """An even-based range of ``size`` UDP ports for an Asterisk's RTP, starting at a port free now (the
    kernel picks it, so instances started side by side by tests, benches and pytest-xdist workers rarely
    meet; Asterisk moves on to the next port of its range when one is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the kernel's pick: away from listeners
        s.bind(("127.0.0.1", 0))
        start = min(int(s.getsockname()[1]), 65534 - size) & ~1
    return start, start + size - 1


def ensure_root(root: Path = DEFAULT_ROOT) -> Path:
    subprocess.run([str(REPO / "scripts" / "asterisk-root.sh"), str(root)], check=True)
    # French prompts: Debian ships them as fr_CA_f_June; Asterisk looks for sounds/fr.
    sounds = root / "usr/share/asterisk/sounds"
    if (sounds / "fr_CA_f_June").is_dir() and not (sounds / "fr").exists():
        (sounds / "fr").symlink_to("fr_CA_f_June")
    return root


@dataclass
class AsteriskInstance:
    name: str
    root: Path = DEFAULT_ROOT
    http_port: int = 8088
    sip_port: int = 5060
    sip_bind: str = "127.0.0.1"
    rtp_start: int = 20000
    rtp_end: int = 22000
    ari_user: str = "callctl"
    ari_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    ari_app: str = "callctl"
    demo_sip_password: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    trunk_port: int = 5070  # the PSTN gateway the "pstn" trunk sends calls to (SIPp in tests)
    emergency_port: int = 5071  # the emergency services gateway (SIPp in tests)
    # Realtime PJSIP users (asterisk-conf/res_pgsql.conf); the default is refused at once, so only the
    # static pjsip.conf objects work until a database is given.
    db_host: str = "127.0.0.1"
    db_port: int = 1
    db_name: str = "callctl"
    db_user: str = "callctl"
    db_password: str = ""
    # AMI (asterisk-conf/manager.conf) for SIP brute-force blocking: off unless given a port (issue 20).
    ami_port: int = 0
    ami_user: str = "callctl"
    ami_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # TLS transport for SIP users (pjsip_tls.conf, a self-signed pair generated once per instance): off unless
    # given a port.
    tls_port: int = 0
    tls_cert: Path | None = None  # the operator's certificate and key (copied in); None: self-signed
    tls_key: Path | None = None
    # Extra configuration text per file name, appended after asterisk-conf/'s version of the file (or
    # written alone when asterisk-conf/ has none): e.g. the benchmark's native dialplan and its CEL log.
    extra_conf: dict[str, str] = field(default_factory=dict)
    # A cluster node (scripts/cluster.py, docs/scaling.md): its own entity id ("" keeps Asterisk's,
    # from the MAC address: the same for every node on one host), new calls refused with 503 before
    # answering while the engine is down (Kamailio then tries the next node), and the cluster's carrier
    # token: the carrier endpoint is then identified by Kamailio's header with it, no longer by 127.0.0.1.
    entity_id: str = ""
    refuse_when_engine_down: bool = False
    carrier_token: str = ""
    agi_url: str = ""  # the engine's FastAGI gate when not the default agi://127.0.0.1:4573 (several engines per host)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def inner_dir(self) -> str:
        """The instance folder as Asterisk sees it (inside the chroot)."""
        return f"/var/lib/callctl-instances/{self.name}"

    @property
    def host_dir(self) -> Path:
        return self.root / self.inner_dir.lstrip("/")

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def sounds_dir(self) -> Path:
        return self.root / "usr/share/asterisk/sounds"

    def install_conf(self) -> None:
        values = {
            "ETC_DIR": f"{self.inner_dir}/etc",
            "STATE_DIR": self.inner_dir,
            "SYSTEM_NAME": f"callctl-{self.name}",
            "HTTP_PORT": str(self.http_port),
            "SIP_PORT": str(self.sip_port),
            "SIP_BIND": self.sip_bind,
            "RTP_START": str(self.rtp_start),
            "RTP_END": str(self.rtp_end),
            "ARI_USER": self.ari_user,
            "ARI_PASSWORD": self.ari_password,
            "ARI_APP": self.ari_app,
            "DEMO_SIP_PASSWORD": self.demo_sip_password,
            "DB_HOST": self.db_host,
            "DB_PORT": str(self.db_port),
            "DB_NAME": self.db_name,
            "DB_USER": self.db_user,
            "DB_PASSWORD": self.db_password,
            "TRUNK_PORT": str(self.trunk_port),
            "EMERGENCY_PORT": str(self.emergency_port),
            "AMI_ENABLED": "yes" if self.ami_port else "no",
            "AMI_PORT": str(self.ami_port or 5038),
            "AMI_USER": self.ami_user,
            "AMI_PASSWORD": self.ami_password,
            # Channel events go to the database when there is one (cdr reconcile reads them).
            "CEL_ENABLED": "no" if self.db_port == 1 else "yes",
        }
        etc = self.host_dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        for sub in ("db", "spool", "spool/recording", "run", "log", "cache"):
            (self.host_dir / sub).mkdir(exist_ok=True)
        for src in sorted(CONF_SRC.glob("*.conf")):
            text = src.read_text()
            for key, value in values.items():
                text = text.replace(f"@{key}@", value)
            if "@" in text and any(f"@{k}@" in text for k in values):  # pragma: no cover
                raise RuntimeError(f"{src}: unfilled placeholder")
            (etc / src.name).write_text(text + self.extra_conf.get(src.name, ""))
        for name, text in self.extra_conf.items():
            if not (CONF_SRC / name).exists():
                (etc / name).write_text(text)
        if self.tls_port:
            (etc / "pjsip_tls.conf").write_text(self._tls_transport())
        self._install_node_conf(etc)
        for secret in ("ari.conf", "res_pgsql.conf", "cel_pgsql.conf", "manager.conf", "pjsip_carrier.conf"):
            if (etc / secret).exists():
                (etc / secret).chmod(0o600)

    def _install_node_conf(self, etc: Path) -> None:
        """The cluster node's files, included by asterisk.conf and extensions.conf when present."""
        node = {"asterisk_node.conf": f"entityid = {self.entity_id}\n" if self.entity_id else "",
                "extensions_node.conf": ("CALLCTL_ENGINE_DOWN = refuse\n" if self.refuse_when_engine_down else "")
                + (f"CALLCTL_AGI = {self.agi_url}\n" if self.agi_url else "")}
        for name, text in node.items():
            if text:
                (etc / name).write_text(text)
            else:
                (etc / name).unlink(missing_ok=True)
        if self.carrier_token:  # in place of asterisk-conf/'s, which trusts 127.0.0.1
            (etc / "pjsip_carrier.conf").write_text(carrier_identify_conf(self.carrier_token))

    @property
    def tls_files(self) -> tuple[Path, Path]:
        """(certificate, key) of the instance's TLS transport, on the host."""
        return self.host_dir / "tls" / "cert.pem", self.host_dir / "tls" / "key.pem"

    def _tls_transport(self) -> str:
        """A self-signed certificate for 127.0.0.1 (made once), and the PJSIP TLS transport using it."""
        cert, key = self.tls_files
        cert.parent.mkdir(parents=True, exist_ok=True)
        if self.tls_cert is not None and self.tls_key is not None:
            cert.write_bytes(self.tls_cert.read_bytes())
            key.write_bytes(self.tls_key.read_bytes())
            key.chmod(0o600)
        elif not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-days", "3650", "-subj", "/CN=callctl-dev", "-addext",
                            "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True)
            key.chmod(0o600)
        inner = f"{self.inner_dir}/tls"
        return (f"[transport-tls]\ntype = transport\nprotocol = tls\nbind = {self.sip_bind}:{self.tls_port}\n"
                f"cert_file = {inner}/cert.pem\npriv_key_file = {inner}/key.pem\nmethod = tlsv1_2\n")

    def use_database(self, url: str) -> None:
        """Point Asterisk realtime (business-line SIP users) at the database of ``url``."""
        parts = urllib.parse.urlsplit(url)
        self.db_host = parts.hostname or "127.0.0.1"
        self.db_port = parts.port or 5432
        self.db_name = parts.path.lstrip("/") or "callctl"
        self.db_user = urllib.parse.unquote(parts.username or "callctl")
        self.db_password = urllib.parse.unquote(parts.password or "")

    def _cmd(self, *args: str) -> list[str]:
        return ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{self.inner_dir}/etc/asterisk.conf", *args]

    def start(self, *, wait_s: float = 60.0) -> None:
        self.install_conf()
        log = open(self.host_dir / "log" / "console.log", "ab")
        # -f: foreground (we own the process); -n: no colours; -g: core on crash.
        self.proc = subprocess.Popen(self._cmd("-f", "-n", "-g"), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_for_ari(wait_s)

    def wait_for_ari(self, wait_s: float = 60.0) -> None:
        deadline = time.monotonic() + wait_s
        url = f"{self.ari_url}ari/asterisk/ping"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.proc.returncode}; see {self.host_dir}/log/console.log")
            req = urllib.request.Request(url)
            req.add_header("Authorization", _basic(self.ari_user, self.ari_password))
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200 and self._fully_booted():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Asterisk ARI on {url} not ready after {wait_s} s")

    def _fully_booted(self) -> bool:
        out = self.rx("core waitfullybooted", check=False)
        return "fully booted" in out.lower()

    def rx(self, command: str, *, check: bool = True) -> str:
        res = subprocess.run(self._cmd("-rx", command), capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed: {res.stderr or res.stdout}")
        return res.stdout

    def stop(self, *, timeout_s: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.rx("core stop now", check=False)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def check_carrier_token(token: str, where: str) -> str:
    """``token`` when it can go into Kamailio's configuration and a PJSIP ``match_header`` as it is (a value
    between slashes would be a regular expression there), else ValueError naming ``where``."""
    if not _CARRIER_TOKEN.fullmatch(token):
        raise ValueError(f"{where}: the carrier token must be 16 to 128 letters, digits, '-' or '_' "
                         f"(found {len(token)} characters)")
    return token


def carrier_identify_conf(token: str) -> str:
    """pjsip_carrier.conf of a node behind Kamailio: the carrier endpoint ``local-peer`` identified by Kamailio's
    header with the cluster's token and nothing else (an identify matches on any of its criteria: no ``match``
    by address, and ``identify_by = header`` so that no From user names it either)."""
    check_carrier_token(token, "carrier token")
    return ("; Written for a cluster node behind Kamailio (docs/security.md, \"Carriers behind Kamailio\"): the\n"
            "; carrier is a request Kamailio marked with the cluster's token, never an address. Secret: readable by\n"
            "; Asterisk only.\n"
            "[local-peer](caller-defaults)\nidentify_by = header\n\n"
            f"[local-peer]\ntype = identify\nendpoint = local-peer\nmatch_header = {CARRIER_HEADER}: {token}\n")


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

