"""Keyless projectors that copy sealed values into read models, and their runners."""
