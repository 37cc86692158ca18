"""Adapters: the ports of `consentry.core` implemented on real technologies."""
