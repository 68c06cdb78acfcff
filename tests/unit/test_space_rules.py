"""The Online Space's pure parts: link tokens, link states, the upload allow-list (on content),
safe file names, rate limits and the page's escaping (issue 19)."""

from __future__ import annotations

import datetime as dt
import io
import math
import zipfile

import pytest

from callctl.conference.booking import Person, messages_for
from callctl.conference.links import link_state, link_url, new_token, public_base, token_hash, well_formed
from callctl.web.limits import RateLimit
from callctl.web.pages import PageContext, notice_page, space_page
from callctl.web.uploads import content_disposition, safe_name, sniff

T0 = dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)


def test_a_token_carries_at_least_128_random_bits_and_only_its_hash_is_kept() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    token = next(iter(tokens))
    assert well_formed(token) and len(token) * math.log2(64) >= 128
    assert len(token_hash(token)) == 32 and token.encode() not in token_hash(token)
    assert not well_formed(token[:-1]) and not well_formed("../../etc/passwd") and not well_formed(token + "=")


def test_link_url_and_its_base() -> None:
    assert link_url("https://space.example.com/", "abc") == "https://space.example.com/s/abc"
    assert public_base("", "127.0.0.1:8098") == "http://127.0.0.1:8098"
    assert public_base(" https://x.example/ ", "127.0.0.1:8098") == "https://x.example"


@pytest.mark.parametrize(("revoked", "cancelled", "now", "state"), [
    (None, None, T0 - dt.timedelta(days=30), "open"),  # valid from booking
    (None, None, T0 + dt.timedelta(hours=1, days=6), "open"),
    (None, None, T0 + dt.timedelta(hours=1, days=7), "expired"),  # the configured time after the end
    (T0, None, T0, "replaced"),
    (None, T0, T0, "cancelled"),
])
def test_link_state(revoked: dt.datetime | None, cancelled: dt.datetime | None, now: dt.datetime,
                    state: str) -> None:
    assert link_state(revoked_at=revoked, cancelled_at=cancelled, ends_at=T0 + dt.timedelta(hours=1),
                      valid_after_s=7 * 86400, now=now) == state


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(("content", "kind"), [
    (b"%PDF-1.7\n...", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n....", "image/png"),
    (b"\xff\xd8\xff\xe0....", "image/jpeg"),
    ("Ordre du jour : budget, été\n".encode(), "text/plain"),
    (_zip({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"}),
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (_zip({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}),
     "application/vnd.oasis.opendocument.text"),
    (b"MZ\x90\x00\x03\x00\x00\x00", None),  # a Windows executable
    (b"\x7fELF\x02\x01\x01", None),
    (_zip({"evil.exe": b"MZ"}), None),  # a zip that is no office document
    (b"GIF89a\x01\x00", None),  # not on the list
    (b"text with a NUL\x00 byte", None),
    (b"", None),
])
def test_uploads_are_checked_on_their_content(content: bytes, kind: str | None) -> None:
    assert sniff(content) == kind


def test_a_name_never_decides_the_type() -> None:
    assert sniff(b"<html><script>alert(1)</script></html>") == "text/plain"  # served as an attachment
    assert sniff(b"MZ\x90\x00") is None  # "report.pdf" or not


@pytest.mark.parametrize(("raw", "kind", "safe"), [
    ("../../etc/passwd", "text/plain", "passwd.txt"),
    ("..\\..\\windows\\system.ini", "text/plain", "system.ini.txt"),
    ("/abs/path/Budget 2027.pdf", "application/pdf", "Budget 2027.pdf"),
    ("...hidden.txt", "text/plain", "hidden.txt"),
    ("invoice.pdf.exe", "application/pdf", "invoice.pdf.exe.pdf"),
    ("a\x00b\nc.txt", "text/plain", "abc.txt"),
    ("", "image/png", "document.png"),
    ("<img src=x onerror=alert(1)>.png", "image/png", "<img src=x onerror=alert(1)>.png"),
])
def test_file_names_lose_directories_and_control_characters(raw: str, kind: str, safe: str) -> None:
    assert safe_name(raw, kind) == safe


def test_long_names_keep_their_extension() -> None:
    name = safe_name("x" * 500 + ".pdf", "application/pdf")
    assert len(name) == 120 and name.endswith(".pdf")


def test_downloads_are_always_attachments_with_a_safe_header() -> None:
    header = content_disposition('Réunion "q1"; x.pdf')
    assert header.startswith('attachment; filename="R_union _q1__ x.pdf"')
    assert "filename*=UTF-8''R%C3%A9union%20%22q1%22%3B%20x.pdf" in header


def test_rate_limit_slides() -> None:
    now = [0.0]
    limit = RateLimit(3, 10.0, lambda: now[0])
    assert [limit.take("a") for _ in range(4)] == [True, True, True, False]
    assert limit.take("b")
    now[0] = 10.5
    assert limit.take("a")


def test_rate_limit_memory_is_bounded() -> None:
    limit = RateLimit(1, 10.0, lambda: 0.0, max_keys=100)
    for i in range(1000):
        limit.hit(f"k{i}")
    assert len(limit._hits) <= 100


EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _ctx(**kw: object) -> PageContext:
    base = dict(language="en", subject=EVIL, starts_at=T0, ends_at=T0 + dt.timedelta(hours=1),
                access_numbers=("+33900000100",), code="12345678", email=f"{EVIL}@x.example", role="organizer",
                csrf='c"><script>', base="/c/1/", max_document_mb=10, max_documents=50)
    base.update(kw)
    return PageContext(**base)  # type: ignore[arg-type]


def test_the_page_escapes_subject_name_and_every_value() -> None:
    page = space_page(_ctx())
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<script") == 1 and '<script src="/static/space.js" defer></script>' in page  # no inline script
    assert "style=" not in page and "onclick" not in page


def test_the_organizer_page_has_the_controls_and_the_participant_page_does_not() -> None:
    organizer = space_page(_ctx())
    participant = space_page(_ctx(role="participant"))
    assert 'id="organizer-controls"' in organizer and 'value="end"' in organizer
    assert 'id="organizer-controls"' not in participant and 'value="end"' not in participant
    assert 'value="lock"' not in participant and 'value="mute_all"' not in participant


def test_the_page_speaks_the_conference_language_and_labels_its_fields() -> None:
    page = space_page(_ctx(language="fr", subject="Point hebdo"))
    assert '<html lang="fr">' in page and "Terminer l&#x27;appel pour tous" in page
    for field in ("file", "message"):
        assert f'<label for="{field}">' in page and f'id="{field}"' in page
    assert "Ce lien" in notice_page("fr", "link_title", "link_replaced")


def test_each_message_carries_its_own_link_only() -> None:
    people = [Person("org@x.example", "organizer", "11112222"), Person("p@x.example", "participant", "33334444")]
    links = {"org@x.example": "https://s.example/s/ORGTOKEN", "p@x.example": "https://s.example/s/PTOKEN"}
    msgs = messages_for(conference_id="c", subject="Weekly", starts_at=T0, ends_at=T0 + dt.timedelta(hours=1),
                        access_numbers=["+33900000100"], people=people, sender="x@x.example", links=links)
    org, part = (m.get_content() for m in msgs)
    assert "ORGTOKEN" in org and "PTOKEN" not in org
    assert "PTOKEN" in part and "ORGTOKEN" not in part and "confidential" in part


def test_every_answer_of_the_space_has_words_in_both_languages() -> None:
    from callctl.web.i18n import TEXT
    from callctl.web.server import STATUS

    assert set(TEXT["en"]) == set(TEXT["fr"])
    assert set(STATUS) <= set(TEXT["en"])


def test_space_settings_are_checked_at_start() -> None:
    from callctl.config import load_settings
    from callctl.errors import ConfigError

    with pytest.raises(ConfigError, match="space_listen 'nowhere' must be HOST:PORT"):
        load_settings(env={"CALLCTL_SPACE_LISTEN": "nowhere"})
    with pytest.raises(ConfigError, match=r"space_public_url 'space\.example\.com' must start with https://"):
        load_settings(env={"CALLCTL_SPACE_PUBLIC_URL": "space.example.com"})
    assert load_settings(env={"CALLCTL_SPACE_LISTEN": ""}).space_listen == ""
