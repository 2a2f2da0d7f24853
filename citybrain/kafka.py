"""Kafka plumbing every stage shares: topic creation and the partitioner.

Topics are created explicitly before anything produces or subscribes (tansu gives a topic that a
metadata request auto-creates 4 partitions, whatever we wanted). Signals are partitioned by grid
with :func:`partition_for`, a stable hash, so that one grid's events stay ordered on one
partition whatever client library produces them.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable

import aiokafka.client
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from citybrain.settings import Settings

log = logging.getLogger(__name__)



class NoAutoCreateMetadataRequest(MetadataRequest):
    """aiokafka's metadata request, never asking the broker to create what it names."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, False)


aiokafka.client.MetadataRequest = NoAutoCreateMetadataRequest

#: The topics of the pipeline (names are ``{prefix}.{name}``).
TOPICS = ("signals", "units", "warnings", "deadletter")
#: The stream worker's state changelog: only each key's latest value matters, so production Kafka
#: compacts it (restart reads stay bounded by the number of keys). Created with the others, so
#: that whoever re-creates topics after an empty broker restart re-creates it too.
STATE_TOPIC = "streams-state"
COMPACTED = (STATE_TOPIC,)


def partition_for(grid: str, partitions: int) -> int:
    """The partition of a grid's signals: crc32, stable across processes and runs."""
    return zlib.crc32(grid.encode()) % partitions


def topic_names(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    names = [settings.topic(t) for t in (*TOPICS, *COMPACTED)]
    return names + [n for n in extra if n not in names]


def new_topic(settings: Settings, name: str) -> NewTopic:
    """``name`` with the pipeline's partition count; compacted if it is a changelog."""
    compacted = {settings.topic(t) for t in COMPACTED}
    configs = {"cleanup.policy": "compact"} if name in compacted else {}
    return NewTopic(name, settings.partitions, 1, topic_configs=configs)


async def ensure_topics_async(settings: Settings, extra: Iterable[str] = (), timeout_s: float = 30.0) -> list[str]:
    """Create the pipeline's topics (and ``extra`` ones) with ``settings.partitions`` partitions.

    Retries until the broker answers or ``timeout_s`` passes; existing topics are left alone.
    Returns the names of the topics that exist afterwards.
    """
    names = topic_names(settings, extra)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                try:
                    await admin.create_topics([new_topic(settings, n) for n in missing])
                except TopicAlreadyExistsError:
                    pass
                log.info("created topics %s", missing)
            return sorted(set(await admin.list_topics()))
        except (TimeoutError, KafkaConnectionError, OSError) as e:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("kafka at %s not ready (%s), retrying", settings.kafka, e)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def ensure_topics(settings: Settings, extra: Iterable[str] = (), timeout_s: float = 30.0) -> list[str]:
    return asyncio.run(ensure_topics_async(settings, extra, timeout_s))
