"""Topics exist only because ``ensure_topics`` made them: with our partitions, the changelog
compacted, and never as a side effect of a client asking for metadata (a restarted tansu
auto-created topics with 4 partitions while we created them, and lost an acknowledged batch)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from citybrain.kafka import STATE_TOPIC, ensure_topics, new_topic


def test_the_state_changelog_is_compacted_and_the_streams_are_not(settings):
    changelog = new_topic(settings, settings.topic(STATE_TOPIC))
    signals = new_topic(settings, settings.topic("signals"))
    assert changelog.topic_configs == {"cleanup.policy": "compact"}
    assert signals.topic_configs == {}
    assert changelog.num_partitions == signals.num_partitions == settings.partitions


def test_ensure_topics_creates_the_changelog_with_the_pipeline_partitions(settings):
    s = settings.replace(partitions=3)  # not tansu's auto-create default of 4
    created = ensure_topics(s)
    assert s.topic(STATE_TOPIC) in created and s.topic("signals") in created

    async def partitions() -> dict[str, int]:
        p = AIOKafkaProducer(bootstrap_servers=s.kafka)
        await p.start()
        try:
            return {t: len(await p.partitions_for(t)) for t in (s.topic(STATE_TOPIC), s.topic("signals"))}
        finally:
            await p.stop()

    assert set(asyncio.run(partitions()).values()) == {3}


def test_producing_to_a_missing_topic_fails_and_does_not_create_it(settings):
    missing = settings.topic("never-created")

    async def go() -> set[str]:
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka, request_timeout_ms=2000)
        await p.start()
        try:
            with pytest.raises(KafkaError):
                await (await p.send(missing, b"x"))
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=settings.kafka)
        await c.start()
        try:
            return await c.topics()
        finally:
            await c.stop()

    assert missing not in asyncio.run(go())
