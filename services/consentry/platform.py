"""Composition root of the embedded platform (filled in with the HTTP services)."""
