"""The producer SDK for upstream systems."""
