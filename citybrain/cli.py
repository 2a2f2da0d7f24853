"""The ``citybrain`` command (CONTRACT section 4) and the engineers' tools.

One argparse tree. The shared options live in one parent parser; each stage that owns commands
adds them through ``register(sub, common)`` in its ``cli`` module, so this file stays a thin
composition root.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from citybrain import logs
from citybrain.exceptions import CitybrainError
from citybrain.settings import Settings

log = logging.getLogger("citybrain")

#: modules that contribute subcommands
STAGE_CLIS = ("simulators.cli", "streams.cli", "alerts.cli")


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options (also CITYBRAIN_* environment variables)")
    g.add_argument("--city", dest="city_file", type=Path, help="city file (YAML or JSON); default: the bundled demo city")
    g.add_argument("--mqtt", dest="mqtt_url", help="use this MQTT broker, mqtt://HOST:PORT (default: start the embedded one)")
    g.add_argument("--mqtt-protocol", dest="mqtt_protocol", choices=["5", "3.1.1"], help="MQTT protocol of --mqtt (default 5)")
    g.add_argument("--mqtt-tls-ca", dest="mqtt_tls_ca", help="CA file: connect to the MQTT broker over TLS")
    g.add_argument("--mqtt-password-file", dest="mqtt_password_file",
                   help="mosquitto password file the embedded broker enforces (e.g. deploy/mosquitto/passwd)")
    g.add_argument("--mqtt-acl-file", dest="mqtt_acl_file",
                   help="mosquitto ACL file the embedded broker enforces (e.g. deploy/mosquitto/acl)")
    g.add_argument("--mqtt-tls-cert", dest="mqtt_tls_cert", help="the embedded broker listens with TLS: certificate")
    g.add_argument("--mqtt-tls-key", dest="mqtt_tls_key", help="the embedded broker listens with TLS: private key")
    g.add_argument("--kafka", dest="kafka_bootstrap", help="use this Kafka bootstrap HOST:PORT (default: start the embedded one)")
    g.add_argument("--data-dir", dest="data_dir", type=Path, help="where stores, logs and state live (default ./.citybrain-data)")
    g.add_argument("--store", dest="store_url", help="incident store URL: postgresql://... (default: SQLite in the data dir)")
    g.add_argument("--tsdb", dest="tsdb_url", help="InfluxDB 2 URL http://HOST:8086 (default: embedded store in the data dir)")
    g.add_argument("--http-port", dest="http_port", type=int, help="screen and API port (default 8050)")
    g.add_argument("--admin-token", dest="admin_token", help="bootstrap admin API token (or CITYBRAIN_ADMIN_TOKEN)")
    g.add_argument("--partitions", dest="partitions", type=int, help="Kafka partitions per topic (default 4)")
    g.add_argument("--topic-prefix", dest="topic_prefix", help="Kafka topic name prefix (default citybrain)")
    return p


SETTING_ARGS = ("city_file", "mqtt_url", "mqtt_protocol", "mqtt_tls_ca", "mqtt_password_file", "mqtt_acl_file",
                "mqtt_tls_cert", "mqtt_tls_key",
                "kafka_bootstrap", "data_dir", "store_url", "tsdb_url",
                "http_port", "admin_token", "partitions", "topic_prefix", "simulate", "sim_scenario", "sim_speed",
                "sim_seed", "mqtt_port", "kafka_port", "kafka_storage", "ingest_processes")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k) for k in SETTING_ARGS if getattr(args, k, None) is not None}
    return Settings.from_env(**overrides)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from citybrain.supervisor import Supervisor

    Supervisor(settings).run_forever()
    return 0


def _check_city(args: argparse.Namespace, settings: Settings) -> int:
    from citybrain.city import load_city

    city = load_city(args.file or settings.city_file)
    levels = {lvl: len(city.by_level(lvl)) for lvl in ("district", "street", "community", "grid")}
    print(f"{city.name}: {levels}, {sum(1 for _ in city.sensors())} sensors, "
          f"{sum(1 for _ in city.cameras())} cameras, {len(city.units)} units - OK")
    return 0


def _make_city(args: argparse.Namespace, settings: Settings) -> int:
    from citybrain import citygen

    citygen.main(args.rest)
    return 0


def _init_topics(args: argparse.Namespace, settings: Settings) -> int:
    from citybrain.kafka import ensure_topics

    print("\n".join(ensure_topics(settings, timeout_s=args.timeout)))
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_system.py"
    if not script.exists():
        print("citybrain bench runs bench/bench_system.py from a source checkout (pip install -e .)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), "--rates", args.rates, "--seconds", str(args.seconds),
                            "--publishers", args.publishers, "--ingest-processes", str(args.bench_ingest)])


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    ap = argparse.ArgumentParser(prog="citybrain", description="City-sensing stream processor and command center")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], help="run the whole system on this machine")
    up.add_argument("--simulate", dest="simulate", action="store_true", default=None,
                    help="also run the simulator (default: only with the bundled demo city)")
    up.add_argument("--no-simulate", dest="simulate", action="store_false")
    up.add_argument("--scenario", dest="sim_scenario", help="simulator scenario (default: demo)")
    up.add_argument("--speed", dest="sim_speed", type=float, help="simulator speed factor")
    up.add_argument("--seed", dest="sim_seed", type=int, help="simulator seed")
    up.add_argument("--ingest-processes", dest="ingest_processes", type=int,
                    help="ingest processes sharing the feed (MQTT 5 broker via --mqtt; default 1)")
    up.add_argument("--mqtt-port", dest="mqtt_port", type=int, help="port of the embedded MQTT broker (default 1883)")
    up.add_argument("--kafka-port", dest="kafka_port", type=int, help="port of the embedded Kafka broker (default 9092)")
    up.add_argument("--kafka-storage", dest="kafka_storage",
                    help="storage of the embedded Kafka broker: memory://tansu/ (default) or s3://BUCKET/ (durable)")
    up.set_defaults(handler=_up)

    chk = sub.add_parser("check-city", parents=[common], help="validate a city file and summarise it")
    chk.add_argument("file", nargs="?", type=Path)
    chk.set_defaults(handler=_check_city)

    mk = sub.add_parser("make-city", help="generate a city file (see python -m citybrain.citygen --help)")
    mk.add_argument("rest", nargs=argparse.REMAINDER)
    mk.set_defaults(handler=_make_city)

    it = sub.add_parser("init-topics", parents=[common], help="create the Kafka topics (before any service starts)")
    it.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the broker")
    it.set_defaults(handler=_init_topics)

    b = sub.add_parser("bench", help="the whole system under a rate ladder (see docs/BENCHMARKS.md)")
    b.add_argument("--rates", default="1000,2000,4000,8000,20000", help="offered messages/s, comma separated")
    b.add_argument("--seconds", type=float, default=20.0, help="length of each rung")
    b.add_argument("--publishers", choices=["raw", "paho"], default="raw",
                   help="load generator: raw-socket QoS 1 publishers (cheap, default) or paho clients")
    b.add_argument("--ingest-processes", dest="bench_ingest", type=int, default=1,
                   help="ingest processes sharing the feed during the ladder")
    b.set_defaults(handler=_bench)

    for mod in STAGE_CLIS:
        try:
            importlib.import_module(mod).register(sub, common)
        except ImportError as e:  # a stage not installed must not break the others' commands
            log.debug("commands of %s unavailable: %s", mod, e)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logs.setup("citybrain", "DEBUG" if args.verbose else None)
    try:
        settings = settings_from_args(args)
        return int(args.handler(args, settings) or 0)
    except CitybrainError as e:
        print(f"citybrain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
