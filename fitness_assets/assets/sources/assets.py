"""The sources as external assets. Nothing in this code location writes them; the sensors
record a materialization when new data arrives (new landing files, Kafka end offsets moving),
so their freshness says whether data is arriving at all, and the Kafka topics carry the
consumer lag as observations."""

from dagster import AssetKey, AssetSpec

from fitness_assets.assets.common import OWNERS
from fitness_assets.tables import KAFKA_TOPICS

LANDING_SOURCES = {
    "registered_users": "Registration portal exports: CSV with header (user_id, device_id, mac_address, "
                        "registration_timestamp in epoch seconds).",
    "gym_logins": "Gym door badge events: CSV with header (mac_address, gym, login, logout in epoch seconds; "
                  "logout empty while the member is inside).",
    "kafka_multiplex": "The Kafka multiplex replayed as files: JSON Lines, one Kafka record per line "
                       "(key, value, topic, partition, offset, timestamp in ms).",
}
TOPICS = {
    "user_info": "Profile changes (CDC: new, update, delete) from the member apps.",
    "workout": "Workout start/stop events from the workout-tracking apps.",
    "bpm": "Heart-rate readings from members' wearable devices.",
}
assert set(TOPICS) == set(KAFKA_TOPICS)


def landing_key(source: str) -> AssetKey:
    return AssetKey(["landing", source])


def kafka_topic_key(topic: str) -> AssetKey:
    return AssetKey(["kafka", topic])


LANDING_SOURCE_KEYS = {source: landing_key(source) for source in LANDING_SOURCES}
KAFKA_SOURCE_KEYS = {topic: kafka_topic_key(topic) for topic in TOPICS}

source_specs = [
    *[AssetSpec(landing_key(s), description=d, group_name="sources", owners=OWNERS, kinds={"file"},
                metadata={"folder": f"$FITNESS_LANDING_ROOT/{s}/"}) for s, d in LANDING_SOURCES.items()],
    *[AssetSpec(kafka_topic_key(t), description=d, group_name="sources", owners=OWNERS, kinds={"kafka"},
                metadata={"topic": t}) for t, d in TOPICS.items()],
]
