"""The Online Space's HTML (pure): every name, subject, code, file name and message goes through
``html.escape``; the live parts are filled by static/space.js with ``textContent`` only. No inline
script or style, so the Content-Security-Policy forbids both."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

from callctl.conference.actions import ORGANIZER
from callctl.web.i18n import words
from callctl.web.uploads import ALLOWED_LABEL


@dataclass(frozen=True)
class PageContext:
    language: str
    subject: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    access_numbers: tuple[str, ...]
    code: str | None
    email: str
    role: str
    csrf: str
    base: str  # the conference's path prefix, e.g. /c/<id>/
    max_document_mb: int
    max_documents: int


def _head(title: str, language: str, extra: str = "") -> str:
    return (f'<!doctype html>\n<html lang="{escape(language)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/space.css">{extra}</head>')


def _form(ctx: PageContext, path: str, action: str, label: str, *, css: str = "", toggle: str = "") -> str:
    """A real form (works without script); space.js posts it in the background."""
    data = f' data-toggle="{escape(toggle)}"' if toggle else ""
    return (f'<form method="post" action="{escape(ctx.base + path)}" class="act{" " + css if css else ""}"{data}>'
            f'<input type="hidden" name="csrf" value="{escape(ctx.csrf)}">'
            f'<input type="hidden" name="action" value="{escape(action)}">'
            f'<button type="submit">{escape(label)}</button></form>')


def space_page(ctx: PageContext) -> str:
    w = words(ctx.language)
    when = f"{ctx.starts_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} - {ctx.ends_at.astimezone(dt.UTC):%H:%M} UTC"
    numbers = "".join(f'<li><a href="tel:{escape(n)}">{escape(n)}</a></li>' for n in ctx.access_numbers)
    code = f'<p>{escape(w["your_code"])}: <strong class="code">{escape(ctx.code)}</strong></p>' if ctx.code else ""
    organizer = ctx.role == ORGANIZER
    controls = ""
    if organizer:
        controls = (f'<section id="organizer-controls" aria-labelledby="controls-h"><h2 id="controls-h">'
                    f'{escape(w["controls"])}</h2><div class="buttons">'
                    + _form(ctx, "action", "mute_all", w["mute_all"], toggle="unmute_all")
                    + _form(ctx, "action", "lock", w["lock"], toggle="unlock")
                    + _form(ctx, "action", "record", w["record"], toggle="stop_recording")
                    + _form(ctx, "action", "end", w["end"], css="danger")
                    + "</div></section>")
    limits = w["limits"].format(size=ctx.max_document_mb, count=ctx.max_documents, types=ALLOWED_LABEL)
    badge = f' <span class="badge">{escape(w["organizer_badge"])}</span>' if organizer else ""
    words_json = "".join(f' data-w-{escape(k.replace("_", "-"))}="{escape(v)}"' for k, v in w.items())
    return (_head(f'{ctx.subject} - {w["space"]}', ctx.language,
                  f'<meta name="csrf" content="{escape(ctx.csrf)}"><script src="/static/space.js" defer></script>')
            + f'<body data-role="{escape(ctx.role)}" data-me="{escape(ctx.email)}" data-base="{escape(ctx.base)}"'
            f'{words_json}>'
            f'<a class="skip" href="#call">{escape(w["skip"])}</a>'
            f'<header><p class="kicker">{escape(w["space"])}</p><h1>{escape(ctx.subject)}</h1>'
            f'<p><time datetime="{escape(ctx.starts_at.isoformat())}">{escape(when)}</time></p>'
            f'<p class="me">{escape(ctx.email)}{badge}</p></header><main>'
            f'<section aria-labelledby="dial-h"><h2 id="dial-h">{escape(w["dial"])}</h2>'
            f'<p>{escape(w["numbers"])}:</p><ul class="numbers">{numbers}</ul>{code}</section>'
            f'<section id="call" aria-labelledby="call-h"><h2 id="call-h">{escape(w["in_call"])}</h2>'
            f'<p id="room-state" role="status" aria-live="polite"></p>'
            f'<ul id="members" aria-live="polite"><li class="empty">{escape(w["nobody"])}</li></ul>'
            f'<div id="self-mute" hidden>{_form(ctx, "action", "mute", w["mute_me"], toggle="unmute")}</div>'
            f'</section>{controls}'
            f'<p id="notice" role="alert" aria-live="assertive"></p>'
            f'<section aria-labelledby="docs-h"><h2 id="docs-h">{escape(w["documents"])}</h2>'
            f'<ul id="documents"><li class="empty">{escape(w["no_documents"])}</li></ul>'
            f'<form id="upload" method="post" action="{escape(ctx.base)}documents" enctype="multipart/form-data">'
            f'<input type="hidden" name="csrf" value="{escape(ctx.csrf)}">'
            f'<label for="file">{escape(w["upload"])}</label>'
            f'<input id="file" name="file" type="file" required aria-describedby="limits">'
            f'<p id="limits" class="hint">{escape(limits)}</p>'
            f'<button type="submit">{escape(w["send_file"])}</button></form></section>'
            f'<section aria-labelledby="chat-h"><h2 id="chat-h">{escape(w["messages"])}</h2>'
            f'<ol id="messages" aria-live="polite"><li class="empty">{escape(w["no_messages"])}</li></ol>'
            f'<form id="chat" method="post" action="{escape(ctx.base)}messages">'
            f'<input type="hidden" name="csrf" value="{escape(ctx.csrf)}">'
            f'<label for="message">{escape(w["message"])}</label>'
            f'<textarea id="message" name="body" rows="2" maxlength="2000" required></textarea>'
            f'<button type="submit">{escape(w["send"])}</button></form></section>'
            f'</main><footer><p>{escape(w["confidential"])}</p></footer></body></html>\n')


def notice_page(language: str, title_key: str, text_key: str) -> str:
    """A plain page for a link that no longer opens, a missing session, too many guesses."""
    w = words(language)
    return (_head(w[title_key] if title_key in w else title_key, language)
            + f'<body><main class="notice"><h1>{escape(w.get(title_key, title_key))}</h1>'
            f'<p>{escape(w[text_key])}</p></main></body></html>\n')
