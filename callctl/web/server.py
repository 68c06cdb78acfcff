"""The Online Space's HTTP server (aiohttp), run inside the daemon so that organizer actions reach
the room through the engine that owns it (docs/conferences.md).

Routes: ``/s/{token}`` opens a personal link (starts a session, then redirects so the token leaves
the address bar); under ``/c/{conference}/``: the page, its live state (``state``, server-sent
``events``), ``action``, ``messages``, ``documents`` (upload) and ``documents/{id}`` (download).
The session cookie's path is that prefix, so one browser can hold several conferences' sessions.
Tokens and session ids are never logged (no access log; events name the conference and role only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web

from callctl.conference.actions import ACTIONS, ORGANIZER, ORGANIZER_ACTIONS, Action, RoomView
from callctl.conference.changes import ChangeFeed
from callctl.conference.links import link_state, public_base, well_formed
from callctl.config import Settings
from callctl.errors import StoreError
from callctl.logging import get_logger
from callctl.store import space as store
from callctl.web.limits import RateLimit
from callctl.web.pages import PageContext, notice_page, space_page
from callctl.web.uploads import content_disposition, safe_name, sniff

log = get_logger("callctl.web")

COOKIE = "callctl_space"
STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
KEEPALIVE_S = 15.0
MAX_MESSAGE = 2000
STATUS = {"done": 200, "forbidden": 403, "unknown_action": 400, "not_in_call": 409, "no_live_room": 409,
          "ended": 409, "failed": 502, "unavailable": 409, "bad_csrf": 403, "too_many": 429, "too_big": 413,
          "bad_type": 415, "too_many_docs": 409, "empty": 400, "too_long": 400,
          "owner_unreachable": 503, "owner_lost": 504}  # issue 18: the room's node did not answer


class Rooms(Protocol):
    """The live rooms wherever they live in the cluster (callctl.conference.remote.ClusterRooms)."""

    changes: ChangeFeed

    async def view(self, conference_id: uuid.UUID) -> RoomView | None: ...
    async def act(self, conference_id: uuid.UUID, action: Action) -> str: ...


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _secure_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")


class SpaceServer:
    def __init__(self, settings: Settings, pool: Any, rooms: Rooms, *,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 monotonic: Callable[[], float] | None = None, guesses_per_10_min: int = 20,
                 streams_per_person: int = 3, streams_total: int = 2000) -> None:
        self._s = settings
        self._pool = pool
        self._rooms = rooms
        self._clock = clock
        mono = monotonic or (lambda: asyncio.get_running_loop().time())
        self.guesses = RateLimit(guesses_per_10_min, 600.0, mono)  # wrong tokens per client address
        self.uploads = RateLimit(10, 600.0, mono)  # per person and conference
        self.posts = RateLimit(30, 60.0, mono)  # messages and actions per person and conference
        self.base_url = public_base(settings.space_public_url, settings.space_listen)
        self._secure = self.base_url.startswith("https://")
        self._streams: set[asyncio.Task[Any]] = set()
        # Live pages held open: a few per person (tabs, a phone), a bound for the whole daemon. A person's
        # newest page takes over from their oldest, which is told so ("moved") and stops reconnecting.
        self.streams_per_person = streams_per_person
        self.streams_total = streams_total
        self._person_streams: dict[str, list[asyncio.Event]] = {}
        self._store_down = False
        self._runner: web.AppRunner | None = None
        self._static = {name: (STATIC / name).read_bytes() for name in ("space.js", "space.css")}
        self.port = 0

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Security headers on every answer; PostgreSQL away gives a clear page (logged when it goes and
        when it comes back), never a 500."""
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            _secure_headers(exc)
            raise
        except StoreError as exc:
            if not self._store_down:
                log.error("space_store_unavailable", error=exc.message)
                self._store_down = True
            response = self._html(notice_page("en", "space", "store_down"), 503)
            response.headers["Retry-After"] = "30"
        else:
            if self._store_down:
                log.info("space_store_available_again")
                self._store_down = False
        _secure_headers(response)
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers],
                              client_max_size=self._s.space_max_document_bytes + 64 * 1024)
        r = app.router
        r.add_get("/", self._root)
        r.add_get("/s/{token}", self._open)
        r.add_get("/static/{name}", self._static_file)
        r.add_get("/c/{cid}/", self._page)
        r.add_get("/c/{cid}/state", self._state_json)
        r.add_get("/c/{cid}/events", self._events)
        r.add_post("/c/{cid}/action", self._action)
        r.add_post("/c/{cid}/messages", self._message)
        r.add_post("/c/{cid}/documents", self._upload)
        r.add_get("/c/{cid}/documents/{doc}", self._download)
        return app

    async def __aenter__(self) -> SpaceServer:
        host, _, port = self._s.space_listen.rpartition(":")
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or "127.0.0.1", int(port))
        try:
            await site.start()
        except OSError as exc:
            # The calls matter more than the web page: the engine runs on without its Online Space.
            await self._runner.cleanup()
            self._runner = None
            log.error("space_listen_failed", listen=self._s.space_listen, error=exc.strerror,
                      hint="another process holds the port: set space_listen (CALLCTL_SPACE_LISTEN)")
            return self
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("space_listening", listen=self._s.space_listen, public_url=self.base_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._streams):  # live pages would hold the shutdown for their keep-alive
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- helpers ---------------------------------------------------------------------------------

    def _html(self, body: str, status: int = 200) -> web.Response:
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    def _notice(self, status: int, key: str, language: str = "en") -> web.Response:
        return self._html(notice_page(language, "link_title" if key.startswith("link_") else "space", key), status)

    async def _person(self, request: web.Request) -> store.Link | web.Response:
        """The session's person for this conference, or the page to answer instead."""
        try:
            cid = uuid.UUID(request.match_info["cid"])
        except ValueError:
            return self._notice(404, "no_session")
        sid = request.cookies.get(COOKIE, "")
        link = await store.session(self._pool, sid) if sid and len(sid) < 100 else None
        if link is None or link.conference.id != cid:
            return self._notice(401, "no_session")
        state = self._link_state(link)
        if state != "open":
            return self._notice(410, f"link_{state}", link.conference.language)
        return link

    def _link_state(self, link: store.Link) -> str:
        c = link.conference
        return link_state(revoked_at=link.revoked_at, cancelled_at=c.cancelled_at, ends_at=c.ends_at,
                          valid_after_s=self._s.space_link_valid_after_s, now=self._clock())

    def _answer(self, request: web.Request, link: store.Link, result: str) -> web.Response:
        status = STATUS.get(result, 400)
        if request.headers.get("X-Requested-With") == "fetch":
            return web.json_response({"result": result}, status=status)
        if status == 200:
            raise web.HTTPSeeOther(f"/c/{link.conference.id}/")
        return self._notice(status, result, link.conference.language)

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # browsers send it with every POST; the CSRF token is checked anyway
            return True
        allowed = {f"{request.scheme}://{request.host}", _origin(self.base_url)}
        return origin in allowed

    async def _checked_post(self, request: web.Request,
                            form: dict[str, Any] | None = None) -> tuple[store.Link, dict[str, Any]] | web.Response:
        """Session, same origin and the CSRF token of a state-changing request."""
        person = await self._person(request)
        if isinstance(person, web.Response):
            return person
        if form is None:
            form = dict(await request.post())
        token = str(form.get("csrf") or request.headers.get("X-CSRF-Token") or "")
        if not self._same_origin(request) or not hmac.compare_digest(token.encode(), person.csrf.encode()):
            log.warning("space_csrf_refused", conference_id=str(person.conference.id), role=person.role)
            return self._answer(request, person, "bad_csrf")
        return person, form

    def _key(self, link: store.Link) -> str:
        return f"{link.conference.id}:{link.email}"

    # -- routes ------------------------------------------------------------------------------------

    async def _root(self, _request: web.Request) -> web.Response:
        return self._notice(404, "no_session")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = self._static.get(name)
        if data is None:
            raise web.HTTPNotFound()
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return web.Response(body=data, content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def _open(self, request: web.Request) -> web.Response:
        ip = request.remote or "?"
        if self.guesses.blocked(ip):
            log.warning("space_link_guesses_blocked", peer=ip)
            return self._notice(429, "slow_down")
        token = request.match_info["token"]
        link = await store.open_link(self._pool, token) if well_formed(token) else None
        if link is None:
            self.guesses.hit(ip)
            log.info("space_link_unknown")
            return self._notice(404, "link_unknown")
        state = self._link_state(link)
        log.info("space_link_opened", conference_id=str(link.conference.id), role=link.role, state=state)
        if state != "open":
            return self._notice(410, f"link_{state}", link.conference.language)
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await store.start_session(self._pool, link.link_hash, sid, csrf)
        path = f"/c/{link.conference.id}/"
        response = web.HTTPSeeOther(path)
        response.set_cookie(COOKIE, sid, path=path, httponly=True, samesite="Lax", secure=self._secure)
        raise response

    async def _page(self, request: web.Request) -> web.Response:
        person = await self._person(request)
        if isinstance(person, web.Response):
            return person
        c = person.conference
        code = await self._code(c.id, person.email)
        ctx = PageContext(c.language, c.subject, c.starts_at, c.ends_at, c.access_numbers, code, person.email,
                          person.role, person.csrf, f"/c/{c.id}/", self._s.space_max_document_bytes // (1024 * 1024),
                          self._s.space_max_documents)
        return self._html(space_page(ctx))

    async def _code(self, conference_id: uuid.UUID, email: str) -> str | None:
        from callctl.store import conferences as conf_store

        codes = await conf_store.live_codes(self._pool, conference_id)
        return next((c.code for c in codes if c.email == email), None)

    async def state(self, link: store.Link) -> dict[str, Any]:
        """What the page shows live: the call, the documents, the messages."""
        cid = link.conference.id
        view = await self._rooms.view(cid)
        docs = await store.documents(self._pool, cid)
        msgs = await store.messages(self._pool, cid)
        return {
            "live": view is not None, "ended": link.conference.ended_at is not None,
            "locked": bool(view and view.locked), "recording": bool(view and view.recording),
            "participants_muted": bool(view and view.participants_muted),
            "members": [{"person": m.person, "role": m.role, "muted": m.muted, "waiting": m.waiting,
                         "joined_at": m.joined_at.isoformat() if m.joined_at else None}
                        for m in (view.members if view else ())],
            "documents": [{"id": str(d.id), "name": d.name, "size": d.size, "by": d.uploaded_by,
                           "at": d.uploaded_at.isoformat()} for d in docs],
            "messages": [{"id": m.id, "author": m.author, "role": m.role, "body": m.body, "at": m.at.isoformat()}
                         for m in msgs],
        }

    async def _state_json(self, request: web.Request) -> web.Response:
        person = await self._person(request)
        if isinstance(person, web.Response):
            return person
        return web.json_response(await self.state(person))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        person = await self._person(request)
        if isinstance(person, web.Response):
            return person
        if len(self._streams) >= self.streams_total:
            log.warning("space_streams_full", open=len(self._streams), limit=self.streams_total)
            busy = self._notice(503, "store_down")
            busy.headers["Retry-After"] = "30"
            return busy
        task = asyncio.current_task()
        assert task is not None
        cid = person.conference.id
        mine = self._person_streams.setdefault(self._key(person), [])
        while len(mine) >= self.streams_per_person:
            mine.pop(0).set()  # the person's oldest page hands over to this one
            self._rooms.changes.notify(str(cid))  # wakes it
        superseded = asyncio.Event()
        mine.append(superseded)
        self._streams.add(task)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            last = ""
            while True:
                if superseded.is_set():
                    await response.write(b"event: moved\ndata: {}\n\n")
                    break
                seen = self._rooms.changes.version(str(cid))
                current = await store.session(self._pool, request.cookies.get(COOKIE, ""))
                if current is None or self._link_state(current) != "open":
                    await response.write(b"event: gone\ndata: {}\n\n")
                    break
                # A fresh look at the conference (ended, cancelled) with each change.
                doc = json.dumps(await self.state(current), separators=(",", ":"))
                if doc != last:
                    await response.write(f"data: {doc}\n\n".encode())
                    last = doc
                if not await self._rooms.changes.wait_for_change(str(cid), KEEPALIVE_S, seen):
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, StoreError):  # the browser left, or the database did: it reconnects
            pass
        finally:
            self._streams.discard(task)
            if superseded in mine:
                mine.remove(superseded)
            if not mine:
                self._person_streams.pop(self._key(person), None)
        return response

    async def _action(self, request: web.Request) -> web.Response:
        checked = await self._checked_post(request)
        if isinstance(checked, web.Response):
            return checked
        person, form = checked
        kind = str(form.get("action") or "")
        target = str(form.get("target") or "") or None
        if kind not in ACTIONS:
            return self._answer(request, person, "unknown_action")
        if person.role != ORGANIZER and (kind in ORGANIZER_ACTIONS or (target or person.email) != person.email):
            log.warning("space_action_refused", conference_id=str(person.conference.id), action=kind,
                        role=person.role)
            return self._answer(request, person, "forbidden")
        if not self.posts.take(self._key(person)):
            return self._answer(request, person, "too_many")
        result = await self._rooms.act(person.conference.id, Action(kind, person.email, person.role,
                                                                    target or person.email))
        return self._answer(request, person, result)

    async def _message(self, request: web.Request) -> web.Response:
        checked = await self._checked_post(request)
        if isinstance(checked, web.Response):
            return checked
        person, form = checked
        body = str(form.get("body") or "").strip()
        if not body:
            return self._answer(request, person, "empty")
        if len(body) > MAX_MESSAGE:
            return self._answer(request, person, "too_long")
        if not self.posts.take(self._key(person)):
            return self._answer(request, person, "too_many")
        await store.add_message(self._pool, person.conference.id, person.email, person.role, body)
        log.info("space_message_posted", conference_id=str(person.conference.id), role=person.role)
        self._rooms.changes.notify(str(person.conference.id))
        return self._answer(request, person, "done")

    async def _upload(self, request: web.Request) -> web.Response:
        person = await self._person(request)
        if isinstance(person, web.Response):
            return person
        limit = self._s.space_max_document_bytes
        csrf, name, content = "", "", b""
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "csrf":
                    csrf = (await part.read(decode=True)).decode("utf-8", "replace")[:200]
                elif part.name == "file":
                    name = part.filename or ""
                    data = bytearray()
                    while chunk := await part.read_chunk(64 * 1024):
                        data += chunk
                        if len(data) > limit:
                            return self._answer(request, person, "too_big")
                    content = bytes(data)
        except (ValueError, AssertionError, web.HTTPRequestEntityTooLarge):
            return self._answer(request, person, "too_big" if request.content_length and
                                request.content_length > limit else "bad_type")
        checked = await self._checked_post(request, {"csrf": csrf})
        if isinstance(checked, web.Response):
            return checked
        if not content:
            return self._answer(request, person, "empty")
        kind = sniff(content)
        if kind is None:
            log.info("space_upload_refused", conference_id=str(person.conference.id), reason="type")
            return self._answer(request, person, "bad_type")
        if not self.uploads.take(self._key(person)):
            return self._answer(request, person, "too_many")
        try:
            doc = await store.add_document(self._pool, person.conference.id, person.email, safe_name(name, kind), kind,
                                           content, self._s.space_max_documents)
        except store.SpaceLimit:
            return self._answer(request, person, "too_many_docs")
        log.info("space_document_shared", conference_id=str(person.conference.id), role=person.role,
                 media_type=kind, size=doc.size)
        self._rooms.changes.notify(str(person.conference.id))
        return self._answer(request, person, "done")

    async def _download(self, request: web.Request) -> web.Response:
        person = await self._person(request)
        if isinstance(person, web.Response):
            return person
        try:
            doc_id = uuid.UUID(request.match_info["doc"])
        except ValueError:
            raise web.HTTPNotFound() from None
        found = await store.document(self._pool, person.conference.id, doc_id)
        if found is None:
            raise web.HTTPNotFound()
        doc, content = found
        return web.Response(body=content, headers={
            "Content-Type": doc.media_type, "Content-Disposition": content_disposition(doc.name),
            "Content-Security-Policy": "sandbox; default-src 'none'"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
