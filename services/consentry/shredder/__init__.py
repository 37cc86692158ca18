"""Erasure, withdrawal and retention shredding, with signed certificates."""
