"""FastAGI adapter: a hardened asyncio reader serving the gate to an operator's extensions.conf."""
