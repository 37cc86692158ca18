"""Consentry: an event-sourced customer-data platform that stores personal data only with consent,
lets every access be seen, and erases by destroying keys (crypto-shredding)."""

__version__ = "0.1.0"
