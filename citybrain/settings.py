"""One frozen settings object, with defaults that run on one machine.

Every process gets its settings from the same place: defaults, then ``CITYBRAIN_*`` environment
variables, then explicit overrides (the command line). The supervisor passes the resolved
settings to its children through the environment, so a child started by hand with the same
environment behaves the same. Secrets are :class:`Secret` so they never show in logs or reprs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citybrain.exceptions import ConfigError

BUNDLED_CITY = Path(__file__).parent / "data" / "demo_city.json"


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    # where things are
    city_file: Path = BUNDLED_CITY
    data_dir: Path = Path(".citybrain-data")
    # MQTT: None means "start the embedded broker on mqtt_port"
    mqtt_url: str | None = None
    mqtt_port: int = 1883
    mqtt_protocol: str = "5"  # "5" or "3.1.1"; the embedded amqtt broker speaks 3.1.1 only
    mqtt_username: str = ""
    mqtt_password: Secret = field(default_factory=lambda: Secret(""))
    mqtt_tls_ca: str = ""  # CA file: connect with TLS (also implied by an mqtts:// URL)
    # the embedded broker enforces these Mosquitto files when set (deploy/mosquitto/passwd, acl)
    mqtt_password_file: str = ""
    mqtt_acl_file: str = ""
    # the embedded broker listens with TLS when given a certificate and its key
    mqtt_tls_cert: str = ""
    mqtt_tls_key: str = ""
    # Kafka: None means "start the embedded tansu broker on kafka_port"
    kafka_bootstrap: str | None = None
    kafka_port: int = 9092
    # what the embedded tansu keeps its topics in: memory (gone with the process) or s3://BUCKET/
    # (durable across a kill; AWS_* variables name the endpoint and credentials)
    kafka_storage: str = "memory://tansu/"
    partitions: int = 4
    topic_prefix: str = "citybrain"
    # stores
    store_url: str | None = None  # None: sqlite file under data_dir; or postgresql://...
    tsdb_url: str | None = None  # None: embedded sqlite under data_dir; or influxdb http URL
    tsdb_token: Secret = field(default_factory=lambda: Secret(""))
    tsdb_org: str = "citybrain"
    tsdb_bucket: str = "citybrain"
    # command center
    http_host: str = "127.0.0.1"
    http_port: int = 8050
    admin_token: Secret = field(default_factory=lambda: Secret(""))
    # ingest edge rules
    max_payload_bytes: int = 65_536
    future_skew_s: float = 300.0
    max_age_s: float = 30 * 86_400.0
    batch_max: int = 2_000
    batch_ms: float = 25.0
    ingest_share_group: str = "citybrain-ingest"
    ingest_client_id: str = "citybrain-ingest-1"
    ingest_name: str = "ingest"  # this ingest process's name (heartbeat file, dead-letter file)
    ingest_processes: int = 1  # `citybrain up` runs this many, sharing the feed (MQTT 5 brokers)
    # streams
    allowed_lateness_s: float = 30.0
    grace_s: float = 60.0
    streams_engine: str = "vector"  # "vector": sensors stepped by a numpy SensorBank; "scalar": one Monitor each
    # simulator run by `citybrain up` (None: only with the bundled demo city)
    simulate: bool | None = None
    sim_scenario: str = "demo"
    sim_speed: float = 1.0
    sim_seed: int = 7

    # ------------------------------------------------------------------ derived

    @property
    def mqtt(self) -> tuple[str, int]:
        """(host, port) of the MQTT broker in use."""
        url = self.mqtt_url or f"mqtt://127.0.0.1:{self.mqtt_port}"
        return parse_host_port(url, default_port=8883 if self.mqtt_tls else 1883)

    @property
    def mqtt_v5(self) -> bool:
        """MQTT 5 (shared subscriptions, session expiry) rather than 3.1.1."""
        return self.mqtt_protocol.strip() in {"5", "5.0", "v5"}

    @property
    def mqtt_tls(self) -> bool:
        return bool(self.mqtt_tls_ca) or (self.mqtt_url or "").startswith(("mqtts://", "ssl://"))

    @property
    def kafka(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'incidents.db').resolve()}"

    @property
    def tsdb(self) -> str:
        return self.tsdb_url or f"sqlite:///{(self.data_dir / 'timeseries.db').resolve()}"

    @property
    def run_dir(self) -> Path:
        """Where components leave their heartbeat/stats files."""
        return self.data_dir / "run"

    def topic(self, name: str) -> str:
        """Kafka topic name: ``signals``, ``units``, ``warnings``, ``deadletter``."""
        return f"{self.topic_prefix}.{name}"

    # ------------------------------------------------------------------ building

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items()})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = "CITYBRAIN_" + f.name.upper()
            if key in env and env[key] != "":
                values[f.name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        base = cls()
        return base.replace(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these same settings."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, Secret):
                v = v.get()
            elif isinstance(v, Path):
                v = str(v.resolve())
            elif isinstance(v, bool):
                v = "1" if v else "0"
            out["CITYBRAIN_" + f.name.upper()] = str(v)
        return out


def _coerce(s: Settings, name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(s)}
    if name not in fields:
        raise ConfigError(f"unknown setting {name!r}")
    current = getattr(s, name)
    try:
        if isinstance(current, Secret) or name in {"mqtt_password", "tsdb_token", "admin_token"}:
            return value if isinstance(value, Secret) else Secret(str(value))
        if isinstance(current, Path):
            return Path(value)
        if isinstance(current, bool) or name == "simulate":
            if isinstance(value, str):
                return value.lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name}: {value!r} is not valid ({e})") from e
    return value


def parse_host_port(url: str, default_port: int) -> tuple[str, int]:
    """``mqtt://host:port``, ``tcp://host:port`` or ``host:port`` -> (host, port)."""
    rest = url.split("://", 1)[-1].rstrip("/")
    rest = rest.rsplit("@", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host:
        host, port = rest, str(default_port)
    try:
        return host, int(port)
    except ValueError as e:
        raise ConfigError(f"bad address {url!r}: port {port!r} is not a number") from e
