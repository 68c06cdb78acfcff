"""Typed identifiers, so a bridge id is never passed where a channel id is expected."""

from typing import NewType

ChannelId = NewType("ChannelId", str)
BridgeId = NewType("BridgeId", str)
CallId = NewType("CallId", str)
PlaybackId = NewType("PlaybackId", str)
