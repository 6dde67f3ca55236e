"""Kafka settings, read from the environment when asked for (never at import time).

Client settings such as SASL credentials come from ``FITNESS_KAFKA_CONFIG_<NAME>`` variables
(``FITNESS_KAFKA_CONFIG_SASL_USERNAME`` -> ``sasl.username``), read only when a client is
built, so they never appear in Dagster's resource configuration or event log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fitness_assets.settings import ConfigError, env_int
from fitness_assets.tables import KAFKA_TOPICS

CLIENT_CONFIG_PREFIX = "FITNESS_KAFKA_CONFIG_"
DEFAULT_GROUP_ID = "fitness-assets"
BOOTSTRAP_VARIABLE = "FITNESS_KAFKA_BOOTSTRAP_SERVERS"
# One bootstrap server as librdkafka reads it: [protocol://]host[:port], host a name, an IPv4
# address or a bracketed IPv6 one. librdkafka itself takes anything and retries it for ever.
_SERVER = re.compile(r"((plaintext|ssl|sasl_plaintext|sasl_ssl)://)?([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:([0-9]+))?",
                     re.IGNORECASE)


def bootstrap_problem(text: str) -> str | None:
    """Why ``text`` cannot be a bootstrap server list (None when it can)."""
    for server in text.split(","):
        match = _SERVER.fullmatch(server.strip())
        if match is None or (match.group(5) is not None and not 0 < int(match.group(5)) < 65536):
            return "host:port[,host:port] with ports from 1 to 65535"
    return None


def kafka_error_text(error: Exception) -> str:
    """A ``KafkaException``'s reason as librdkafka words it (its ``KafkaError``'s text)."""
    first = error.args[0] if error.args else None
    return first.str() if first is not None and callable(getattr(first, "str", None)) else str(error)


def client_config_problem(config: Mapping[str, object]) -> str | None:
    """What librdkafka refuses in ``config`` (None when nothing), found by making a consumer
    that connects to nothing (~1 ms). Names the ``FITNESS_KAFKA_CONFIG_*`` variable to fix."""
    from confluent_kafka import Consumer, KafkaException

    try:
        Consumer({**config, "bootstrap.servers": ""}).close()
    except KafkaException as error:
        reason = kafka_error_text(error)
        named = re.findall(r'"([^"]+)"', reason)
        variable = CLIENT_CONFIG_PREFIX + named[-1].upper().replace(".", "_") if named else "a FITNESS_KAFKA_CONFIG_* variable"
        return f"{variable} is not a Kafka client setting librdkafka accepts ({reason}): fix or unset it"
    return None


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

    def __post_init__(self) -> None:
        wrong = bootstrap_problem(self.bootstrap_servers) if self.bootstrap_servers else None
        if wrong:
            raise ConfigError(f"{BOOTSTRAP_VARIABLE} must be {wrong}, not {self.bootstrap_servers!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = dict(os.environ if env is None else env)
        topics = tuple(t.strip() for t in (env.get("FITNESS_KAFKA_TOPICS") or ",".join(KAFKA_TOPICS)).split(",")
                       if t.strip())
        settings = cls(
            bootstrap_servers=(env.get(BOOTSTRAP_VARIABLE) or "").strip() or None,
            topics=topics,
            group_id=env.get("FITNESS_KAFKA_GROUP_ID") or DEFAULT_GROUP_ID,
            max_records_per_batch=env_int(env, "FITNESS_KAFKA_MAX_RECORDS_PER_BATCH", 100_000),
            max_batches_per_run=env_int(env, "FITNESS_KAFKA_MAX_BATCHES_PER_RUN", 20),
            client_config=client_config_from_env(env),
        )
        wrong = client_config_problem(settings.consumer_config()) if settings.enabled else None
        if wrong:
            raise ConfigError(wrong)
        return settings

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
