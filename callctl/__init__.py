"""callctl: a call-control engine for Asterisk over ARI."""

__version__ = "0.1.0"
