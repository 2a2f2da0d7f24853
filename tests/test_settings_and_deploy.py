"""Settings round-trip through the environment; the production compose file is well-formed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from citybrain.exceptions import ConfigError
from citybrain.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_round_trip_through_env(tmp_path):
    s = Settings().replace(data_dir=tmp_path, mqtt_url="mqtt://h:1884", partitions=8, admin_token="t0ken",
                           simulate=True, future_skew_s=12.5)
    back = Settings.from_env(s.to_env())
    assert back == s
    assert back.admin_token.get() == "t0ken"
    assert back.mqtt == ("h", 1884)


def test_secrets_never_print():
    s = Settings().replace(admin_token="hunter2", mqtt_password="pw")
    assert "hunter2" not in repr(s) and "pw'" not in repr(s)
    assert repr(Secret("x")) == "Secret('**********')"


def test_bad_values_are_clear_errors():
    with pytest.raises(ConfigError, match="partitions"):
        Settings.from_env({"CITYBRAIN_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="port"):
        _ = Settings().replace(mqtt_url="mqtt://host:notaport").mqtt
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings().replace(nonsense=1)


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_with_healthchecks():
    c = _compose()
    svc = c["services"]
    assert {"mosquitto", "kafka", "influxdb", "postgres", "ingest", "worker", "incidents", "command-center"} <= set(svc)
    assert svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "zookeeper" not in svc
    assert svc["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for name in ("mosquitto", "kafka", "influxdb", "postgres", "ingest", "worker", "incidents", "command-center"):
        assert "healthcheck" in svc[name], name
    for name in ("ingest", "worker", "incidents", "command-center"):
        deps = svc[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"


def test_compose_env_names_are_real_settings():
    fields = {"CITYBRAIN_" + f.name.upper() for f in dataclasses.fields(Settings)}
    for name, svc in _compose()["services"].items():
        for key in (svc.get("environment") or {}):
            if key.startswith("CITYBRAIN_"):
                assert key in fields, f"{name}: {key} is not a setting"


def test_mosquitto_config_and_acl_are_consistent():
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf
    assert "password_file /mosquitto/config/passwd" in conf and "acl_file /mosquitto/config/acl" in conf
    acl = (ROOT / "deploy/mosquitto/acl").read_text()
    assert "pattern write city/sensors/%u" in acl
    assert "pattern read city/units/%u/dispatch" in acl
    users = {ln.split(":")[0] for ln in (ROOT / "deploy/mosquitto/passwd").read_text().splitlines() if ln}
    acl_users = {ln.split()[1] for ln in acl.splitlines() if ln.startswith("user ")}
    assert acl_users <= users
