"""Where data comes from, on the graph: landing folders and Kafka topics (external assets)."""

from fitness_assets.assets.sources.assets import (
    KAFKA_SOURCE_KEYS,
    LANDING_SOURCE_KEYS,
    kafka_topic_key,
    landing_key,
    source_specs,
)

__all__ = ["KAFKA_SOURCE_KEYS", "LANDING_SOURCE_KEYS", "kafka_topic_key", "landing_key", "source_specs"]
