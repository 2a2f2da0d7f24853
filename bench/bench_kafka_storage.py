"""The embedded Kafka-compatible broker on durable storage against memory: produce throughput.

    python bench/bench_kafka_storage.py [--records 6000] [--size 2000]

Two tansu brokers in the same run, the same producer and the same records: one on memory
storage (the default of `citybrain up`, the baseline) and one on S3 storage
(``--kafka-storage s3://BUCKET/``) backed by a private ``moto_server`` on this machine. The
producer is aiokafka with ``acks="all"`` and ``linger_ms=5``, as ingest produces; ``--size`` bytes a
record is about a 25-reading columnar signals batch. Prints records/s and MB/s of each and the
ratio S3 / memory, then reads everything back from both to check nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaProducer  # noqa: E402

from citybrain.brokers import MEMORY_STORAGE  # noqa: E402
from citybrain.kafka import ensure_topics  # noqa: E402
from citybrain.settings import Settings  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.ingest_helpers import consume  # noqa: E402
from tests.test_kafka_durable import BUCKET, private_object_store, tansu_on  # noqa: E402


async def produce(settings: Settings, records: int, size: int) -> float:
    """Seconds to have every record acknowledged."""
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", linger_ms=5,
                         max_request_size=8 * 1024 * 1024)
    await p.start()
    try:
        body = b"\"" + b"x" * (size - 2) + b"\""  # a JSON string, so consume() can read it back
        t0 = time.perf_counter()
        futs = [await p.send(settings.topic("signals"), body, partition=k % settings.partitions)
                for k in range(records)]
        await asyncio.gather(*futs)
        return time.perf_counter() - t0
    finally:
        await p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=6000)
    ap.add_argument("--size", type=int, default=2000, help="bytes a record")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kafka-storage-"))
    with private_object_store(tmp / "s3.log") as env:
        rates = {}
        for name, storage, broker_env in (("memory", MEMORY_STORAGE, {}), ("s3", f"s3://{BUCKET}/", env)):
            port = free_port()
            kafka = tansu_on(port, broker_env, tmp / f"tansu-{name}.log", storage=storage)
            try:
                s = Settings(kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix=f"bench{name}")
                ensure_topics(s)
                asyncio.run(produce(s, 200, a.size))  # warm-up: connections, metadata
                seconds = asyncio.run(produce(s, a.records, a.size))
                back = consume(s, "signals", lambda out, n=a.records + 200: len(out) >= n, timeout=120)
                assert len(back) == a.records + 200, f"{name}: {len(back)} of {a.records + 200} read back"
            finally:
                kafka.stop()
            rates[name] = a.records / seconds
            print(f"{name:>6}: {a.records} records of {a.size} B acknowledged in {seconds:.2f} s = "
                  f"{rates[name]:,.0f} records/s, {rates[name] * a.size / 1e6:.1f} MB/s", flush=True)
    print(f" ratio: s3 / memory = {rates['s3'] / rates['memory']:.2f}")


if __name__ == "__main__":
    main()
