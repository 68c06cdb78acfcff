"""The native baseline of the conference access-code flow, written the way an operator would without
callctl (Answer, Read, ConfBridge in extensions.conf), and the CEL log both implementations are timed by.

Only the benchmark's own Asterisk gets this text (``AsteriskInstance.extra_conf``); asterisk-conf/ is
untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

NATIVE_ACCESS = "+33900000199"  # not in dialplan/numbers.yaml: only the appended dialplan answers it
CEL_FILE = "bench.csv"  # under the instance's log folder: cel-custom/bench.csv

_DIALPLAN = """
; --- callctl bench: the native baseline (bench/native.py) ---
[from-callers](+)
exten => {access},1,Goto(bench-native,s,1)

[bench-native]
; The same flow as dialplan/flows/conference.yaml: answer, up to 3 code entries ending with #,
; # ends the code (no digit count),
; the code decides the room, then the caller stays in the room until hang-up.
exten => s,1,Answer()
 same => n,Set(TRIES=0)
 same => n(ask),Read(CODE,conf-getpin,,,1,10)
 same => n,GotoIf(${{DIALPLAN_EXISTS(bench-codes,${{CODE}},1)}}?bench-codes,${{CODE}},1)
 same => n,Set(TRIES=$[${{TRIES}} + 1])
 same => n,GotoIf($[${{TRIES}} < 3]?invalid)
 same => n,Playback(vm-goodbye)
 same => n,Hangup()
 same => n(invalid),Playback(pbx-invalid)
 same => n,Goto(ask)

[bench-codes]
; One extension per live code (what an operator's provisioning script would write): code -> room.
{codes}
"""

# ConfBridge plays "you are the only person" *before* the first member enters the bridge (callctl
# plays it after): off, so the join is timed at the same point for both.
_CONFBRIDGE = """[general]

[default_user]
type = user
announce_only_user = no
"""

_CEL = """[general]
enable = yes
events = CHAN_START,ANSWER,BRIDGE_ENTER,HANGUP
dateformat = %s.%6q
"""

_CEL_CUSTOM = """[mappings]
{file} => ${{eventtype}},${{eventtime}},${{CALLERID(num)}},${{uniqueid}}
"""


def dialplan(codes: Mapping[str, str]) -> str:
    """extensions.conf text for the baseline; ``codes`` maps each access code to its room name."""
    lines = "\n".join(f"exten => {code},1,ConfBridge({room})" for code, room in sorted(codes.items()))
    return _DIALPLAN.format(access=NATIVE_ACCESS, codes=lines)


def extra_conf(codes: Mapping[str, str]) -> dict[str, str]:
    """Everything the benchmark adds to its Asterisk: the baseline dialplan and a CEL log of
    channel start, answer and bridge entry (the events both implementations are timed by). ConfBridge
    declines to load without a confbridge.conf."""
    return {"extensions.conf": dialplan(codes), "confbridge.conf": _CONFBRIDGE, "cel.conf": _CEL,
            "cel_custom.conf": _CEL_CUSTOM.format(file=CEL_FILE)}
