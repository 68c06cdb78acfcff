"""Shared documents (pure): the allow-list of types, checked on the content (never the name), and
file names made safe to store and to offer back as an attachment."""

from __future__ import annotations

import io
import re
import unicodedata
import urllib.parse
import zipfile

# media type -> the extensions a downloaded file may keep (the first one is added otherwise)
ALLOWED: dict[str, tuple[str, ...]] = {
    "application/pdf": (".pdf",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "text/plain": (".txt", ".csv", ".md"),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (".docx",),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (".xlsx",),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (".pptx",),
    "application/vnd.oasis.opendocument.text": (".odt",),
    "application/vnd.oasis.opendocument.spreadsheet": (".ods",),
    "application/vnd.oasis.opendocument.presentation": (".odp",),
}
ALLOWED_LABEL = "PDF, PNG, JPEG, text, Word/Excel/PowerPoint, OpenDocument"
MAX_NAME = 120
_OOXML = {"word/": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
          "xl/": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
          "ppt/": "application/vnd.openxmlformats-officedocument.presentationml.presentation"}
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def sniff(content: bytes) -> str | None:
    """The allowed media type ``content`` really is (None: not on the allow-list)."""
    if content.startswith(b"%PDF-"):
        return "application/pdf"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(b"PK\x03\x04"):
        return _office(content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or _TEXT_CONTROL.search(text):
        return None
    return "text/plain"


def _office(content: bytes) -> str | None:
    """OOXML (by its parts) or OpenDocument (by its mimetype member); only the directory and that one
    small member are read, never the documents themselves (a zip bomb is not inflated)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            names = z.namelist()
            if "mimetype" in names and z.getinfo("mimetype").file_size < 100:
                kind = z.read("mimetype").decode("ascii", "replace").strip()
                return kind if kind in ALLOWED else None
            if "[Content_Types].xml" in names:
                for prefix, kind in _OOXML.items():
                    if any(n.startswith(prefix) for n in names):
                        return kind
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, NotImplementedError, RuntimeError):
        return None
    return None


def safe_name(raw: str, media_type: str) -> str:
    """A file name without directories, control characters or leading dots, at most MAX_NAME
    characters, ending with an extension of its real type."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip() or "document"
    extensions = ALLOWED.get(media_type, ("",))
    if not name.lower().endswith(extensions):
        name += extensions[0]
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = stem[: MAX_NAME - len(ext) - 1] + dot + ext
    return name


def content_disposition(name: str) -> str:
    """Always an attachment; an ASCII fallback and the UTF-8 name (RFC 6266)."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
