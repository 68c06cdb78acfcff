"""`make run`: PostgreSQL (local cluster unless CALLCTL_DATABASE_URL is set) + Asterisk 22 + callctl,
with the sample dialplan and demo data, in the foreground. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from callctl.config import Settings
from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair


def _port(preferred: int, *, udp_too: bool = False) -> int:
    """The standard port when it is free, else any free one."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", preferred))
        if udp_too:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", preferred))
        return preferred
    except OSError:
        return free_port_pair() if udp_too else free_port()


def _secret(path: Path, nbytes: int) -> str:
    if not path.exists():
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", type=Path, default=REPO / ".state")
    args = parser.parse_args()
    state: Path = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    stopping: list[subprocess.Popen[bytes]] = []
    asterisk: AsteriskInstance | None = None
    own_pg = "CALLCTL_DATABASE_URL" not in os.environ
    try:
        env = start_database(py, state, own_pg)
        database_url = env["CALLCTL_DATABASE_URL"]

        ensure_root()
        asterisk = AsteriskInstance(
            "run", http_port=_port(8088), sip_port=_port(5060, udp_too=True),
            ari_password=_secret(state / "ari-password", 18), demo_sip_password=_secret(state / "demo-sip-password", 9),
            # issue 20: SIP over TLS (a self-signed pair made once), AMI for the SIP brute-force blocking
            tls_port=_port(5061), ami_port=_port(5038), ami_password=_secret(state / "ami-password", 18),
            # TLS_CERT / TLS_KEY: the operator's pair; without them a self-signed one is made once
            tls_cert=Path(os.environ["TLS_CERT"]) if os.environ.get("TLS_CERT") else None,
            tls_key=Path(os.environ["TLS_KEY"]) if os.environ.get("TLS_KEY") else None,
        )
        subprocess.run([py, "-m", "callctl", "dialplan", "render-prompts", str(REPO / "dialplan"),
                        "--out", str(asterisk.sounds_dir)], check=True, cwd=REPO)
        asterisk.use_database(database_url)  # business-line SIP users come from PostgreSQL (realtime)
        asterisk.start()
        env.update(engine_env(asterisk, state, http_port=_port(8099), space_port=_port(8098)))
        write_cli_settings(env, "make run")
        summary = dialplan_summary(py, env)
        demo = _demo(py, env, state)
        print(_banner(asterisk, env, summary, demo), flush=True)
        daemon = subprocess.Popen([py, "-m", "callctl", "run"], env=env, cwd=REPO)
        stopping.append(daemon)
        signal.signal(signal.SIGTERM, lambda *_: daemon.send_signal(signal.SIGTERM))
        try:
            return daemon.wait()
        except KeyboardInterrupt:
            daemon.send_signal(signal.SIGTERM)
            return daemon.wait(timeout=60)
    except subprocess.CalledProcessError as exc:
        print(f"make run: step failed: {' '.join(map(str, exc.cmd))} (exit {exc.returncode})", file=sys.stderr)
        return 1
    finally:
        for proc in stopping:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=40)
        if asterisk is not None:
            asterisk.stop()
        if own_pg:
            stop_database(py, state)
        print("make run: everything stopped.", flush=True)


# -- pieces shared with `make cluster` (scripts/cluster.py) ------------------------------------------
def start_database(py: str, state: Path, own_pg: bool) -> dict[str, str]:
    """PostgreSQL (a local cluster in STATE/pg when ``own_pg``), migrated; the environment pointing at it."""
    if own_pg:
        pg_port = _port(5432)
        out = subprocess.run([py, "-m", "tests.support.postgres", "start", str(state / "pg"), str(pg_port)],
                             check=True, capture_output=True, text=True, cwd=REPO).stdout.strip()
        database_url = out.splitlines()[-1] if out else f"postgresql://callctl@127.0.0.1:{pg_port}/callctl"
    else:
        database_url = os.environ["CALLCTL_DATABASE_URL"]
    (state / "database-url").write_text(database_url + "\n")
    env = dict(os.environ, CALLCTL_DATABASE_URL=database_url)
    subprocess.run([py, "-m", "callctl", "db", "migrate"], check=True, env=env, cwd=REPO)
    return env


def stop_database(py: str, state: Path) -> None:
    subprocess.run([py, "-m", "tests.support.postgres", "stop", str(state / "pg")], cwd=REPO, check=False)


def engine_env(asterisk: AsteriskInstance, state: Path, *, http_port: int, space_port: int) -> dict[str, str]:
    """The settings of the engine driving ``asterisk``, its files under ``state``."""
    return {
        "CALLCTL_ARI_URL": asterisk.ari_url, "CALLCTL_ARI_USER": asterisk.ari_user,
        "CALLCTL_ARI_PASSWORD": asterisk.ari_password, "CALLCTL_DIALPLAN_DIR": str(REPO / "dialplan"),
        "CALLCTL_SPOOL_DIR": str(state / "spool"), "CALLCTL_RUNTIME_DIR": str(state / "run"),
        "CALLCTL_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "CALLCTL_AMI_ADDRESS": f"127.0.0.1:{asterisk.ami_port}", "CALLCTL_AMI_USER": asterisk.ami_user,
        "CALLCTL_AMI_PASSWORD": asterisk.ami_password,
        "CALLCTL_SPACE_LISTEN": f"127.0.0.1:{space_port}",  # the conferences' Online Space
        "CALLCTL_PJSIP_CONF": str(asterisk.host_dir / "etc" / "pjsip.conf"),  # dial targets' trunks checked
        "CALLCTL_OUTBOX_DIR": str(state / "outbox"),
        "CALLCTL_CONFERENCE_ACCESS_NUMBERS": "+33900000100,+33900000101",
    }


def write_cli_settings(env: dict[str, str], by: str) -> None:
    """./callctl.yaml is a default settings path: the CLI run from the checkout finds this stack."""
    known = {f.name for f in dataclasses.fields(Settings)} - {"source"}
    settings = {k.removeprefix("CALLCTL_").lower(): v for k, v in env.items() if k.startswith("CALLCTL_")
                and k.removeprefix("CALLCTL_").lower() in known}
    (REPO / "callctl.yaml").write_text(f"# Written by `{by}` for this checkout's stack.\n" + "".join(
        f"{k}: {json.dumps(v)}\n" for k, v in sorted(settings.items())))
    (REPO / "callctl.yaml").chmod(0o600)


def dialplan_summary(py: str, env: dict[str, str]) -> str:
    return subprocess.run([py, "-m", "callctl", "dialplan", "check", str(REPO / "dialplan")],
                          capture_output=True, text=True, env=env, cwd=REPO).stdout.strip()


def _cli(py: str, env: dict[str, str], *args: str) -> Any:
    res = subprocess.run([py, "-m", "callctl", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"callctl {' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
    return json.loads(res.stdout) if res.stdout.strip().startswith("{") else res.stdout


def _demo(py: str, env: dict[str, str], state: Path) -> str:
    """Demo data: a conference open now (fresh codes every run) and, once per state dir, a
    business-line account with a SIP user, a DID, a small rate deck and prepaid credit."""
    try:
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        conf = _cli(py, env, "conference", "create", "--subject", "callctl demo", "--start", start.isoformat(),
                    "--duration", "480", "--organizer", "organizer@example.com", "--participant",
                    "guest@example.com", "--access-number", "+33900000100", "--leave-policy", "continue")
        line_file = state / "demo-line.json"
        if not line_file.exists():
            acc = _cli(py, env, "account", "create", "--name", "Demo company", "--country", "FR")
            user = _cli(py, env, "user", "add", "--account", acc["id"], "--name", "Demo user",
                        "--number", "+33170000001")
            deck = state / "demo-deck.csv"
            deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,1,0.02,EUR\n"
                            "336,France mobile,2,0.10,EUR\n44,United Kingdom,2,0.03,EUR\n1,USA,3,0.01,EUR\n")
            _cli(py, env, "rates", "import", str(deck), "--deck", "demo")
            _cli(py, env, "credit", "add", "--account", acc["id"], "5.00")
            line_file.write_text(json.dumps({"account": acc["id"], "sip_username": user["sip_username"],
                                             "sip_password": user["sip_password"]}))
            line_file.chmod(0o600)
        line = json.loads(line_file.read_text())
    except (RuntimeError, KeyError, ValueError) as exc:
        return f" Demo data not created: {exc}\n"
    return f"""   Dial-in conference (until {conf["ends_at"][:16]}Z): call +33900000100, key the code, then #
     organizer code {conf["organizer"]["code"]}   participant code {conf["participants"][0]["code"]}
     Online Space (personal links, open each in its own browser profile):
       organizer   {conf["organizer"].get("link", "(space off)")}
       participant {conf["participants"][0].get("link", "(space off)")}
   Business line (account {line["account"]}, 5.00 EUR prepaid):
     register a softphone as  user {line["sip_username"]}  password {line["sip_password"]}
     it rings on +33170000001; its outbound calls go to the PSTN trunk (127.0.0.1:5070, none here)
"""


def _banner(a: AsteriskInstance, env: dict[str, str], summary: str, demo: str) -> str:
    return f"""
================================================================================
 callctl is starting. Place a call:
   Softphone (any SIP client on this machine):
     server   127.0.0.1:{a.sip_port} (UDP or TCP)     user  demo     password  {a.demo_sip_password}
     TLS      127.0.0.1:{a.tls_port} (self-signed: {a.tls_files[0]}), SRTP (SDES) offered
   Without registering (SIPp, trusted from 127.0.0.1):
     sipp -sn uac -s +33900000002 127.0.0.1:{a.sip_port} -m 1 -d 5000
   Numbers to dial (dialplan/numbers.yaml):
     +33900000001  welcome prompt, then hang-up
     +33900000002  menu: 1 plays a prompt, 2 asks for 4 digits ending with # and reads them back
   Dialplan: {summary}
   Health:   http://{env['CALLCTL_HTTP_LISTEN']}/readyz    Metrics: http://{env['CALLCTL_HTTP_LISTEN']}/metrics
   Database: {env['CALLCTL_DATABASE_URL']}   (CDRs: SELECT * FROM cdr ORDER BY started_at DESC;)
{demo} Ctrl-C stops callctl, Asterisk and PostgreSQL.
================================================================================
"""


if __name__ == "__main__":
    raise SystemExit(main())
