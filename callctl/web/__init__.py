"""The conference Online Space served to browsers (aiohttp adapter and its pure helpers)."""
