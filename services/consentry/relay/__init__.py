"""Event store notification log to Kafka, with the position tracked."""
