"""The read side: the only place that decrypts, and every read is an event first."""
