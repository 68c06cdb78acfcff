"""RFC 2833 / 4733 DTMF as a pcap file for SIPp's ``play_pcap_audio``.

Debian's dtmf_2833_*.pcap captures all carry the same RTP timestamp, so Asterisk takes a repeated
digit (the second 1 of "11") for a retransmission of the first and drops it. This writes one
capture per digit string with a fresh event timestamp and sequence number for every digit.
"""

from __future__ import annotations

import struct
from pathlib import Path

EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
PAYLOAD_TYPE = 101
SPACING_MS = 400  # digit to digit
TONE_MS = 200  # how long each key is held
PACKET_MS = 20


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(rtp: bytes) -> bytes:
    udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def write_pcap(path: Path, digits: str, ssrc: int = 0x43414C4C, part: int = 0) -> float:
    """Write ``digits`` as RFC 2833 events; returns how long the capture lasts, in seconds.

    ``part`` numbers the captures of one call: each gets timestamps and sequence numbers of its
    own, or Asterisk would take a later code's digits for repeats of an earlier one's.
    """
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    seq = 1000 + part * 1000
    at_ms = 0
    for i, key in enumerate(digits):
        event = EVENTS[key]
        timestamp = 160_000 + part * 800_000 + i * SPACING_MS * 8  # each digit its own event timestamp
        packets: list[tuple[int, int, bool, bool]] = []  # (time ms, duration, marker, end)
        for k in range(TONE_MS // PACKET_MS):
            packets.append((at_ms + k * PACKET_MS, (k + 1) * PACKET_MS * 8, k == 0, False))
        end_duration = TONE_MS * 8
        packets += [(at_ms + TONE_MS + j * PACKET_MS, end_duration, False, True) for j in range(3)]
        for t_ms, duration, marker, end in packets:
            rtp = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | PAYLOAD_TYPE, seq & 0xFFFF, timestamp, ssrc)
            rtp += struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            frame = _frame(rtp)
            out.append(struct.pack("<IIII", t_ms // 1000, (t_ms % 1000) * 1000, len(frame), len(frame)) + frame)
            seq += 1
        at_ms += SPACING_MS
    path.write_bytes(b"".join(out))
    return at_ms / 1000
