"""The write model: the subject aggregate's pure decisions, the sealing mapper and the ledger."""
