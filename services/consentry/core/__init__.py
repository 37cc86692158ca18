"""The framework-free kernel: ids, clocks, errors, the Avro codec, sealing, keys, policy, settings."""
