"""Kafka settings, read from the environment when asked for (never at import time).

Client settings such as SASL credentials come from ``FITNESS_KAFKA_CONFIG_<NAME>`` variables
(``FITNESS_KAFKA_CONFIG_SASL_USERNAME`` -> ``sasl.username``), read only when a client is
built, so they never appear in Dagster's resource configuration or event log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from fitness_assets.settings import env_int
from fitness_assets.tables import KAFKA_TOPICS

CLIENT_CONFIG_PREFIX = "FITNESS_KAFKA_CONFIG_"
DEFAULT_GROUP_ID = "fitness-assets"


def client_config_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings from ``FITNESS_KAFKA_CONFIG_*`` (underscores become dots)."""
    env = os.environ if env is None else env
    return {
        name[len(CLIENT_CONFIG_PREFIX):].lower().replace("_", "."): value
        for name, value in env.items()
        if name.startswith(CLIENT_CONFIG_PREFIX) and value != ""
    }


@dataclass(frozen=True)
class KafkaSettings:
    """Where the Kafka multiplex comes from and how much one run takes.

    ``bootstrap_servers`` unset means Kafka is off: bronze reads only landing files.
    """

    bootstrap_servers: str | None = None
    topics: tuple[str, ...] = KAFKA_TOPICS
    group_id: str = DEFAULT_GROUP_ID
    max_records_per_batch: int = 100_000
    max_batches_per_run: int = 20
    poll_timeout_seconds: float = 10.0
    client_config: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = dict(os.environ if env is None else env)
        topics = tuple(t.strip() for t in (env.get("FITNESS_KAFKA_TOPICS") or ",".join(KAFKA_TOPICS)).split(",")
                       if t.strip())
        return cls(
            bootstrap_servers=env.get("FITNESS_KAFKA_BOOTSTRAP_SERVERS") or None,
            topics=topics,
            group_id=env.get("FITNESS_KAFKA_GROUP_ID") or DEFAULT_GROUP_ID,
            max_records_per_batch=env_int(env, "FITNESS_KAFKA_MAX_RECORDS_PER_BATCH", 100_000),
            max_batches_per_run=env_int(env, "FITNESS_KAFKA_MAX_BATCHES_PER_RUN", 20),
            client_config=client_config_from_env(env),
        )

    def consumer_config(self) -> dict[str, object]:
        """Consumer settings: offsets are positioned by the caller (from the Delta table), never
        committed automatically, and queue back-off kept short (librdkafka's default 1 s
        back-off whenever its queue fills caps a batch read at a fraction of the network's rate)."""
        if not self.bootstrap_servers:
            raise ValueError("Kafka is off: set FITNESS_KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port])")
        return {
            **client_config_from_env(),
            **self.client_config,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 10,
            "isolation.level": "read_committed",
        }
