"""Shared fixtures: real PostgreSQL (tests.support.postgres) and real Asterisk + SIPp (tests.support.asterisk)."""

pytest_plugins = ["tests.support.postgres", "tests.support.asterisk"]
