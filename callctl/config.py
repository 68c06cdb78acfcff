"""Settings: read once from a YAML file and the environment, validated eagerly, frozen.

Order: built-in defaults < settings file (``--config``, else /etc/callctl/callctl.yaml, else
./callctl.yaml) < environment (``CALLCTL_<FIELD>``, e.g. CALLCTL_DATABASE_URL).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from callctl.errors import ConfigError
from callctl.keys import objection_key_problem

DEFAULT_CONFIG_PATHS = (Path("/etc/callctl/callctl.yaml"), Path("callctl.yaml"))


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://callctl@127.0.0.1:5432/callctl"
    ari_url: str = "http://127.0.0.1:8088/"
    ari_user: str = "callctl"
    ari_password: str = ""
    ari_app: str = "callctl"
    dialplan_dir: Path = Path("dialplan")
    # Asterisk's PJSIP configuration: `dialplan check` refuses dial steps through a trunk not in it
    # (not checked when the file is absent, e.g. on a workstation).
    pjsip_conf: Path = Path("/etc/asterisk/pjsip.conf")
    spool_dir: Path = Path("/var/lib/callctl/spool")
    runtime_dir: Path = Path("/run/callctl")
    http_listen: str = "127.0.0.1:8099"
    shutdown_grace_s: float = 30.0
    reconnect_min_s: float = 0.5  # first wait before reconnecting to ARI (doubled on each failure)
    reconnect_max_s: float = 30.0
    ari_heartbeat_s: float = 5.0
    log_level: str = "info"
    log_number_digits: int = 4  # digits of a phone number left visible in logs (the rest masked)
    # FastAGI gate for an operator's own extensions.conf: AGI(agi://127.0.0.1:4573/gate?account=ID)
    agi_listen: str = "127.0.0.1:4573"  # empty: no FastAGI server
    agi_allow: str = "127.0.0.0/8,::1/128"  # peers allowed to connect (FastAGI has no authentication)
    # conferences
    conference_code_length: int = 8
    conference_access_numbers: str = ""
    conference_lockout_failures: int = 5  # wrong codes from one caller number within the window
    conference_lockout_number_failures: int = 50  # wrong codes on one access number within the window
    conference_lockout_window_s: float = 600.0  # comma-separated E.164 numbers offered by default
    reservation_address: str = "reservations@callctl.invalid"
    mail_from: str = "callctl <no-reply@callctl.invalid>"
    smtp_relay: str = ""  # host:port; empty: messages are only written to outbox_dir
    outbox_dir: Path = Path("/var/lib/callctl/outbox")
    # the conference Online Space (docs/conferences.md): personal web links, served by the daemon
    space_listen: str = "127.0.0.1:8098"  # HOST:PORT; empty: no Online Space (and no links in messages)
    space_public_url: str = ""  # base of the links people receive, e.g. https://space.example.com
    space_link_valid_after_s: float = 7 * 86400.0  # a link opens until this long after the conference ends
    space_max_document_bytes: int = 10 * 1024 * 1024
    space_max_documents: int = 50  # per conference
    # billing: plans (payg, unlimited, trial), editable by operators; kept out of dialplan/ (its own schema)
    plans_file: Path = Path(__file__).resolve().parent.parent / "billing" / "plans.yaml"
    # recording (docs/recording.md); recordings_dir None: next to the spool (spool_dir/../recordings)
    recordings_dir: Path | None = None
    recording_objection_key: str = "9"  # the remote party of a recorded line call presses it to object
    # toll fraud and SIP attacks (issue 20, docs/security.md): limits of accounts that set none (money in
    # the account's currency), the high-risk destination prefixes, where alerts also go
    fraud_hour_limit: str = "200"
    fraud_day_limit: str = "1000"
    fraud_calls_per_minute: int = 30
    fraud_international_calls: int = 10
    fraud_warn_percent: int = 80
    fraud_high_risk_prefixes: str = "882,883,979,53,220,224,231,232,235,239,245,246,247,252,269,290,674,682,683,688,690"
    fraud_alert_email: str = ""
    # SIP brute force: Asterisk's security events over AMI (empty ami_address: no blocking)
    ami_address: str = ""  # host:port of Asterisk's manager interface, e.g. 127.0.0.1:5038
    ami_user: str = "callctl"
    ami_password: str = ""
    sip_trusted_networks: str = "127.0.0.1/32,::1/128"  # never blocked
    sip_block_failures: int = 5  # failed authentications from one address ...
    sip_block_window_s: float = 60.0  # ... within this window block it
    sip_block_s: float = 900.0  # for this long, doubled for each block of it in the last 24 h
    sip_block_max_s: float = 86400.0
    # the cluster (docs/scaling.md): this engine's node, the one Asterisk it drives; empty: the host name.
    # Rows that must be told apart across nodes (channel slots, room ownership, journals) carry it.
    node_id: str = ""
    # wt-affinity (issue 18): a conference room's lease in PostgreSQL, renewed every third of it by the
    # owner engine; another node takes the room over this long after the owner stopped renewing.
    conference_lease_s: float = 15.0
    # wt-cluster (issue 18, docs/scaling.md): the ARI connection down this long means the node's Asterisk
    # is gone (one engine per node, on the loopback): its calls end, billed up to the moment it dropped.
    ari_lost_calls_after_s: float = 10.0
    # wt-global (issue 18, docs/lines.md): an engine renews its node's lease every third of this; the
    # channel slots of a node whose engine has not renewed it for this long are freed by the others.
    node_lease_s: float = 15.0
    # ... and the open calls of a node whose engine has not renewed it for this long are taken over (recorded
    # as incomplete CDRs by another engine): longer than an engine restart, for its Asterisk may still hold them.
    node_takeover_s: float = 300.0
    # wt-transport (issue 17): the event loop and how ARI requests travel (docs/benchmarks.md).
    event_loop: str = "uvloop"  # uvloop or asyncio
    # wt-wsfix (issue 17): websocket (default; Asterisk 22.4+, an older one gets HTTP by itself) or http
    # (docs/operations.md). ari_rest_sockets: the websockets carrying requests, besides the events one
    # (Asterisk serves one request at a time on each).
    ari_rest_transport: str = "websocket"
    ari_rest_sockets: int = 4
    ari_request_timeout_s: float = 10.0  # a request with no answer by then fails (AriUnavailable)
    # wt-edgeban (issue 18, docs/security.md): the ctl socket of the cluster's Kamailio, which bans SIP
    # brute force at the edge (unix:/run/kamailio/kamailio_ctl or tcp:HOST:PORT; empty: no Kamailio):
    # `callctl fraud blocks` lists its bans and `callctl fraud unblock` lifts them too (through kamcmd).
    kamailio_ctl: str = ""
    # wt-preanswer (issue 17, docs/architecture.md "Answered by Asterisk"): numbers whose flow starts with
    # "answer" are answered by Asterisk before Stasis(); off: the engine answers every call itself.
    preanswer: str = "on"
    source: str = "defaults"

    @property
    def node(self) -> str:
        """This engine's node id (``node_id``, else the host name)."""
        return self.node_id or socket.gethostname()

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "callctl.pid"

    @property
    def recordings_path(self) -> Path:
        """Where the engine files finished recordings (and where retention and privacy look)."""
        return self.recordings_dir if self.recordings_dir is not None else self.spool_dir.parent / "recordings"

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.http_listen.rpartition(":")
        return host or "127.0.0.1", int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "source"}


def _coerce(name: str, raw: Any, where: str) -> Any:
    kind = _FIELDS[name].type
    try:
        if raw is None:
            # YAML reads `key: #` as no value: an unquoted '#' starts a comment.
            raise ValueError("no value (in YAML quote '#' and '*': '#')")
        if kind in ("Path", "Path | None"):
            if not str(raw).strip():
                raise ValueError("expected a path, got nothing")
            return Path(str(raw))
        if kind == "int":
            number = int(raw)
            if number < 0:
                raise ValueError("must not be negative")
            return number
        if kind == "float":
            value = float(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if not isinstance(raw, str | int | float):
            raise ValueError(f"expected text, got {type(raw).__name__}")
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: setting '{name}' is invalid: {exc}") from None


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings; every problem is a ConfigError naming the file or variable."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    source = "defaults"
    candidates = [path] if path is not None else [p for p in DEFAULT_CONFIG_PATHS if p.exists()][:1]
    for candidate in candidates:
        try:
            text = candidate.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{candidate}: cannot read settings file: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f"{candidate}:{mark.line + 1}:{mark.column + 1}" if mark else str(candidate)
            raise ConfigError(f"{at}: settings file is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{candidate}: settings file must be a mapping of name: value")
        for key, raw in data.items():
            if key not in _FIELDS:
                known = ", ".join(sorted(_FIELDS))
                raise ConfigError(f"{candidate}: unknown setting '{key}' (known: {known})")
            values[key] = _coerce(key, raw, str(candidate))
        source = str(candidate)
    for name in _FIELDS:
        var = "CALLCTL_" + name.upper()
        if var in env:
            values[name] = _coerce(name, env[var], f"environment {var}")
    settings = Settings(**values, source=source)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    url = urlparse(s.ari_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"ari_url '{s.ari_url}' must look like http://HOST:PORT/")
    if not s.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database_url must start with postgresql:// (set CALLCTL_DATABASE_URL)")
    try:
        s.http_host_port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(f"http_listen '{s.http_listen}' must be HOST:PORT") from None
    if s.agi_listen and not s.agi_listen.rpartition(":")[2].isdigit():
        raise ConfigError(f"agi_listen '{s.agi_listen}' must be HOST:PORT (or empty to disable FastAGI)")
    if s.space_listen and not s.space_listen.rpartition(":")[2].isdigit():
        raise ConfigError(f"space_listen '{s.space_listen}' must be HOST:PORT (or empty to disable the Online Space)")
    if s.space_public_url and urlparse(s.space_public_url).scheme not in ("http", "https"):
        raise ConfigError(f"space_public_url '{s.space_public_url}' must start with https:// (or http://)")
    if not 1.0 <= s.conference_lease_s <= 3600.0:
        raise ConfigError(f"conference_lease_s {s.conference_lease_s} must be between 1 and 3600 seconds")
    if not 4 <= s.conference_code_length <= 16:
        raise ConfigError(f"conference_code_length {s.conference_code_length} must be between 4 and 16")
    problem = objection_key_problem(s.recording_objection_key)
    if problem:
        raise ConfigError(f"recording_objection_key '{s.recording_objection_key}' {problem} "
                          "(set CALLCTL_RECORDING_OBJECTION_KEY or recording_objection_key in the settings file)")
    if not 0 < s.reconnect_min_s <= s.reconnect_max_s:
        raise ConfigError(f"reconnect_min_s {s.reconnect_min_s} must be above 0 and at most reconnect_max_s "
                          f"{s.reconnect_max_s}")
    if not s.ari_lost_calls_after_s > 0:
        raise ConfigError(f"ari_lost_calls_after_s {s.ari_lost_calls_after_s} must be above 0 (seconds)")
    if s.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(f"event_loop '{s.event_loop}' must be uvloop or asyncio")
    if s.ari_rest_transport not in ("websocket", "http"):
        raise ConfigError(f"ari_rest_transport '{s.ari_rest_transport}' must be websocket or http")
    if s.preanswer not in ("on", "off"):  # wt-preanswer
        raise ConfigError(f"preanswer '{s.preanswer}' must be on or off (set CALLCTL_PREANSWER)")
    if not 1 <= s.ari_rest_sockets <= 32:
        raise ConfigError(f"ari_rest_sockets {s.ari_rest_sockets} must be between 1 and 32")
    if s.ari_request_timeout_s <= 0:
        raise ConfigError(f"ari_request_timeout_s {s.ari_request_timeout_s} must be above 0")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level '{s.log_level}' must be one of debug, info, warning, error")
    if s.node_lease_s < 3:  # wt-global: renewed every third of it; below 3 s a busy database frees live slots
        raise ConfigError(f"node_lease_s {s.node_lease_s} must be at least 3 seconds (set CALLCTL_NODE_LEASE_S)")
    if s.node_takeover_s < s.node_lease_s:
        raise ConfigError(f"node_takeover_s {s.node_takeover_s} must be at least node_lease_s {s.node_lease_s} "
                          "(set CALLCTL_NODE_TAKEOVER_S)")
