"""The ``voicemail`` flow step: a greeting, a beep, then the caller's message, recorded up to a
maximum length, ended by silence, '#' or hanging up; filed and e-mailed (service.py).

    - voicemail:
        box: support                  # the box (letters, digits, - and _)
        email: support@example.com    # who receives each message, the audio attached
        greeting: vm-greeting         # prompt(s) first (default: sound:vm-intro)
        beep: true                    # default true
        max_length: 120               # seconds (5-600, default 120)
        silence: 5                    # seconds of silence that end it (0: never; default 5)

After it, ``{voicemail_status}`` is left, empty (nothing was said) or failed.
"""

from __future__ import annotations

import re
from typing import Any

from callctl.flows.registry import FlowContext, register_step_type
from callctl.voicemail.service import Box, VoicemailService

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_GREETING = ("sound:vm-intro",)

_service: VoicemailService | None = None


def bind(service: VoicemailService | None) -> None:
    """Called by the daemon once its voicemail service exists (None to unbind at shutdown)."""
    global _service
    _service = service


def parse(reader: Any) -> Box | None:
    opts = reader.mapping(["box", "email", "greeting", "beep", "max_length", "silence"], ["box", "email"])
    if opts is None:
        return None
    box = reader.text(opts.get("box"), "voicemail box", pattern=NAME_RE, hint=" (letters, digits, - and _)")
    mail = reader.text(opts.get("email"), "voicemail email", pattern=EMAIL_RE, hint=" (an e-mail address)")
    greeting = reader.prompts(opts.get("greeting"), "voicemail greeting") if "greeting" in opts else DEFAULT_GREETING
    beep = reader.boolean(opts.get("beep"), "beep", True)
    max_length_s = reader.integer(opts.get("max_length"), "max_length (seconds)", 120, 5, 600)
    silence_s = reader.integer(opts.get("silence"), "silence (seconds)", 5, 0, 60)
    if box is None or mail is None:
        return None
    return Box(name=box, email=mail, greeting=greeting, beep=beep, max_length_s=max_length_s, silence_s=silence_s)


async def run(ctx: FlowContext, box: Box) -> str | None:
    await ctx.play(list(box.greeting))
    ending = f"up to {box.max_length_s} s" + (f", ends after {box.silence_s} s of silence" if box.silence_s else "")
    channel_id = getattr(ctx.call, "channel_id", None)
    if _service is None or channel_id is None:  # `dialplan simulate`: no phone, nothing recorded
        ctx.variables["voicemail_status"] = "left"
        ctx.note(f"would record a message for box '{box.name}' ({ending}, on # or hang-up) and e-mail it to "
                 f"{box.email}")
        return None
    status = await _service.take(box, channel_id=str(channel_id), call_id=str(ctx.call.call_id),
                                 caller=ctx.call.caller, called=ctx.route.number)
    ctx.variables["voicemail_status"] = status
    ctx.note(f"voicemail box '{box.name}': {status} ({ending})")
    return None


register_step_type("voicemail", parse, run, stores=("voicemail_status",))
