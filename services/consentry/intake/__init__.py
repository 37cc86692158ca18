"""HTTP and Kafka intake: producer authentication, validation, batching into the ledger."""
