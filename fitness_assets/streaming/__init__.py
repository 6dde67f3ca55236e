"""Kafka for the multiplex: a local Kafka-protocol broker, producers of the landing contract's
records, and a live producer that plays a simulated chain in accelerated real time."""
