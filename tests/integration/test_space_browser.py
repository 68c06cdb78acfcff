"""The Online Space in a real browser (Debian's headless Chromium driven by selenium) against the
real daemon, Asterisk and SIPp callers (issue 19): the organizer's page follows the call live and
steers it through the engine; a participant's page cannot; documents go from one member to another
and never to an outsider. One scenario, one browser, phone-sized window.

Set CALLCTL_SPACE_SCREENSHOTS=DIR to keep the organizer's and a participant's page as PNG there
(docs/space-organizer.png and docs/space-participant.png come from it).
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from scripts.devstack import AsteriskInstance, free_port
from tests.integration.test_conference import ACCESS, _record_bridge_rms, ari, book
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=412,915")  # a phone's screen


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a driver or a browser
    profile = tempfile.mkdtemp(prefix="callctl-chromium-")
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: webdriver.Chrome, what: str, condition: Any, timeout_s: float = 15) -> Any:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition, message=what)


def members(driver: webdriver.Chrome) -> dict[str, str]:
    """The live list as shown (read in one go: the page may redraw a row meanwhile)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('li.member')].map(li => [li.dataset.person, li.innerText]);")
    return {person: text for person, text in rows}


def click(driver: webdriver.Chrome, css: str) -> None:
    """Click like a user; a row redrawn between finding and clicking is found again."""
    def clicked(d: webdriver.Chrome) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    until(driver, f"click {css}", clicked)


def screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page at a phone's width."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(412, height + 120)
    driver.save_screenshot(str(path))
    driver.set_window_size(412, 915)


def bridge_rms(asterisk: AsteriskInstance, conference_id: str, name: str) -> float:
    """RMS of 3 s of the conference bridge, its first half second left out (the mixer may still hold a
    few frames from before)."""
    _record_bridge_rms(asterisk, 3, name, conference_id)
    path = asterisk.host_dir / "spool" / "recording" / f"{name}.wav"
    out = subprocess.run(["sox", str(path), "-n", "trim", "0.5", "stat"], capture_output=True, text=True).stderr
    return float(next(line.split(":")[1] for line in out.splitlines() if line.startswith("RMS     amplitude")))


def token_of(link: str) -> str:
    return link.rsplit("/s/", 1)[1]


def fetch(driver: webdriver.Chrome, path: str, form: dict[str, str]) -> list[Any]:
    """A POST from inside the page (same origin, the page's cookie), as a forged request would be."""
    script = """
        const [path, fields, done] = arguments;
        const body = new FormData();
        for (const [k, v] of Object.entries(fields)) body.set(k, v);
        fetch(path, {method: "POST", body, headers: {"X-Requested-With": "fetch"}})
          .then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));"""
    return list(driver.execute_async_script(script, path, form))


def long_speech(directory: Path, repeats: int) -> Path:
    """Debian's 7 s G.711 capture ``repeats`` times in a row, with RTP sequence numbers and timestamps
    running on (replaying the capture as is restarts them, and Asterisk drops the replay as old packets).
    Written as ``directory/g711a.pcap`` for SIPp's "audio" step."""
    data = (sipp.PCAPS / "g711a.pcap").read_bytes()
    header, packets, offset = data[:24], [], 24
    while offset + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack("<IIII", data[offset:offset + 16])
        packets.append((sec + usec / 1e6, data[offset + 16:offset + 16 + incl]))
        offset += 16 + incl
    first, span = packets[0][0], packets[-1][0] - packets[0][0] + 0.02
    out, seq, stamp = [header], 0, 0
    for r in range(repeats):
        for at, frame in packets:
            rtp_at = 42  # Ethernet 14 + IPv4 20 + UDP 8
            rtp = bytearray(frame[rtp_at:])
            struct.pack_into("!HI", rtp, 2, seq & 0xFFFF, stamp & 0xFFFFFFFF)
            seq, stamp = seq + 1, stamp + 160
            t = at - first + r * span
            new = frame[:rtp_at] + bytes(rtp)
            out.append(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(new), len(new)) + new)
    path = directory / "g711a.pcap"
    path.write_bytes(b"".join(out))
    return path


def call(asterisk: AsteriskInstance, code: str, number: str, talk: bool = False) -> tuple[Any, Path]:
    """A caller who keys CODE# and stays until the engine hangs up (``talk``: speaking all along, from
    the long capture the test put in place of SIPp's own)."""
    speech: list[tuple[str, object]] = [("audio", 0.1)] if talk else []
    return sipp.start_call(asterisk.sip_port, ACCESS, [("pause", 1200), ("dtmf", code + "#"), *speech,
                                                       ("wait_bye", None)],
                           caller=number, bye_timeout_s=150, timeout_s=170)


def test_organizer_steers_the_call_from_the_browser_and_a_participant_cannot(
        browser: webdriver.Chrome, daemon_factory: Any, asterisk: AsteriskInstance, database_url: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    speech = tmp_path / "speech"
    speech.mkdir()
    long_speech(speech, 12)  # 84 s: longer than the scenario
    monkeypatch.setattr(sipp, "PCAPS", speech)
    conf = book(database_url, tmp_path, participants=3)
    port = free_port()
    d = daemon_factory(space_listen=f"127.0.0.1:{port}")
    d.wait_until_ready()
    d.wait_for_log("space_listening")
    base = f"http://127.0.0.1:{port}"
    page = f"{base}/c/{conf['id']}/"
    org_link = f"{base}/s/{token_of(conf['organizer']['link'])}"
    p0, p1, p2 = conf["participants"]
    shots = Path(os.environ.get("CALLCTL_SPACE_SCREENSHOTS") or tmp_path)

    # The organizer opens their link: a session starts and the token leaves the address bar.
    browser.get(org_link)
    assert browser.current_url == page
    until(browser, "the live stream", lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-live"))
    assert browser.find_elements(By.ID, "organizer-controls")

    # Three callers join; the page shows each of them without a reload.
    legs = {"org": call(asterisk, conf["organizer"]["code"], "33611000101"),
            "p0": call(asterisk, p0["code"], "33611000102", talk=True),
            "p1": call(asterisk, p1["code"], "33611000103")}
    until(browser, "3 members listed live", lambda b: len(members(b)) == 3, 30)
    listed = members(browser)
    assert "Organizer" in listed["org@example.com"] and "muted" not in listed[p0["email"]]

    # Mute p0 from the page: the caller's channel is muted in Asterisk (the bridge no longer hears them).
    takes = itertools.count()

    def heard() -> bool:  # each take its own file: a reused name could be read before it is rewritten
        return bridge_rms(asterisk, conf["id"], f"space-rms-{next(takes)}") > 0.01

    wait_for(heard, 40, "p0 heard in the bridge", interval_s=0)
    click(browser, f'li.member[data-person="{p0["email"]}"] button[data-action="mute"]')
    until(browser, "p0 shown muted", lambda b: "muted" in members(b)[p0["email"]])
    d.wait_for_log("conference_member_muted", muted=True)
    wait_for(lambda: not heard(), 20, "p0 no longer heard in the bridge", interval_s=0)
    # Lock the room: a third participant calling now is refused.
    click(browser, '#organizer-controls form[data-toggle="unlock"] button')
    until(browser, "the room shown locked", lambda b: "locked" in b.find_element(By.ID, "room-state").text)
    late = call(asterisk, p2["code"], "33611000104")
    refused = sipp.finish(*late)
    assert refused.ok, refused.stderr  # the engine hung up on them
    assert d.wait_for_log("conference_join_refused")["reason"] == "locked"
    assert len(members(browser)) == 3
    screenshot(browser, shots / "space-organizer.png")

    # Unmuted from the page, p0 is heard again: the silence was the mute, not the end of their speech.
    click(browser, f'li.member[data-person="{p0["email"]}"] button[data-action="unmute"]')
    until(browser, "p0 shown unmuted", lambda b: "muted" not in members(b)[p0["email"]])
    wait_for(heard, 20, "p0 heard again once unmuted", interval_s=0)

    # A participant's page: no organizer control, and the server refuses them anyway.
    browser.get(f"{base}/s/{token_of(p1['link'])}")
    until(browser, "the participant's live page", lambda b: len(members(b)) == 3)
    assert not browser.find_elements(By.ID, "organizer-controls")
    assert not browser.find_elements(By.CSS_SELECTOR, 'li.member button[data-action="remove"]')
    csrf = browser.find_element(By.CSS_SELECTOR, 'meta[name="csrf"]').get_attribute("content") or ""
    for action, target in (("mute", p0["email"]), ("unlock", ""), ("end", ""), ("remove", p0["email"]),
                           ("mute_all", "")):
        status, text = fetch(browser, page + "action", {"action": action, "target": target, "csrf": csrf})
        assert status == 403 and "forbidden" in text, (action, status, text)
    assert "muted" not in members(browser)[p0["email"]] and "locked" in browser.find_element(By.ID, "room-state").text
    assert len(ari(asterisk, "channels")) == 3  # nobody was hung up

    # The participant shares a document (markup in its name stays text) and writes a message.
    doc = tmp_path / '<img src=x onerror=alert(1)>agenda.txt'
    doc.write_text("1. budget\n2. <script>alert('x')</script>\n")
    browser.find_element(By.ID, "file").send_keys(str(doc))
    browser.find_element(By.CSS_SELECTOR, "#upload button").click()
    until(browser, "the document listed", lambda b: b.find_elements(By.CSS_SELECTOR, "#documents a.doc"))
    browser.find_element(By.ID, "message").send_keys("<b>hello</b> <script>alert(2)</script>")
    browser.find_element(By.CSS_SELECTOR, "#chat button").click()
    until(browser, "the message listed", lambda b: b.find_elements(By.CSS_SELECTOR, "#messages li.message"))
    assert browser.find_element(By.CSS_SELECTOR, "#documents a.doc").text == "<img src=x onerror=alert(1)>agenda.txt"
    assert browser.find_element(By.CSS_SELECTOR, "#messages .body").text == "<b>hello</b> <script>alert(2)</script>"
    assert not browser.find_elements(By.CSS_SELECTOR, "#documents img, #messages b, #messages script")
    href = browser.find_element(By.CSS_SELECTOR, "#documents a.doc").get_attribute("href") or ""
    screenshot(browser, shots / "space-participant.png")

    # Another member (the organizer) downloads it: an attachment, never rendered.
    browser.get(org_link)
    until(browser, "the organizer's page again", lambda b: len(members(b)) == 3)
    got = browser.execute_async_script("""
        const done = arguments[1];
        fetch(arguments[0]).then(async r => done([r.status, r.headers.get("content-disposition"),
                                                  r.headers.get("x-content-type-options"), await r.text()]));""",
                                       href)
    assert got[0] == 200 and got[1].startswith("attachment;") and got[2] == "nosniff"
    assert got[3] == doc.read_text()
    # An outsider (no session) gets nothing.
    with pytest.raises(urllib.error.HTTPError) as refused_doc:
        urllib.request.urlopen(href, timeout=5)
    refused_doc.value.close()
    assert refused_doc.value.code == 401

    # End the call for everyone: every leg is hung up.
    click(browser, "#organizer-controls form.danger button")
    browser.switch_to.alert.accept()  # "End the call for everyone?"
    for name, (proc, work) in legs.items():
        result = sipp.finish(proc, work)
        assert result.first("UDP message received", "BYE"), name  # the engine hung up this leg
    wait_for(lambda: not ari(asterisk, "channels"), 15, "every channel gone")
    until(browser, "the page says the call ended", lambda b: not members(b))
    assert not d.tracebacks()
    logs = "\n".join(d.raw + d.stderr)
    assert not [t for t in (token_of(conf["organizer"]["link"]), token_of(p1["link"])) if t in logs]
