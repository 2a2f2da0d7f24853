"""`citybrain up`: start, watch, restart and stop every component as a child process.

Why child processes: a crash of one component (or of a broker) never takes the others down,
and each can be restarted on its own. The supervisor:

- starts the embedded brokers unless told to use existing ones (``--mqtt``, ``--kafka``),
- creates the Kafka topics before anything produces or subscribes,
- starts ingest, the stream worker, the incident service, the command center and (for the
  demo city) the simulator,
- restarts a child that dies, with exponential backoff (logged), and re-creates topics when an
  in-memory Kafka broker came back empty,
- writes ``run/supervisor.json`` every second (component states for ``GET /api/health``),
- on SIGINT/SIGTERM stops children in reverse order (producers first, brokers last), giving
  each time to flush and acknowledge, so nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from citybrain import health, mqtt_auth
from citybrain.brokers import check_kafka_storage, tansu_command
from citybrain.exceptions import ComponentStartError
from citybrain.kafka import ensure_topics
from citybrain.settings import BUNDLED_CITY, Settings

log = logging.getLogger("citybrain.supervisor")

STOP_TIMEOUT_S = 20.0
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child up this long has its backoff reset


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the child if the supervisor itself dies (kill -9)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    port: int | None = None  # a TCP port that must answer before it counts as started
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    state: str = "down"
    log_path: Path | None = None
    on_restart: list = field(default_factory=list)
    role: str = ""  # what it runs (several ingest children share one role); default: its name
    env: dict[str, str] = field(default_factory=dict)  # its own settings on top of the shared ones

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


# the MQTT user each component connects as when the embedded broker enforces a password file
# (the same names as deploy/mosquitto/acl and docker-compose.yml)
SERVICE_USERS = {"ingest": "citybrain-ingest", "alerts": "citybrain-alerts",
                 "dashboard": "citybrain-dashboard", "simulator": "citybrain-simulator"}


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.mqtt_credentials: dict[str, tuple[str, str]] = {}
        self.settings = self._prepare(settings)
        self.children: list[Child] = []
        self.external: dict[str, str] = {}
        if self.settings.mqtt_url:
            self.external["mqtt-broker"] = self.settings.mqtt_url
        if self.settings.kafka_bootstrap:
            self.external["kafka-broker"] = self.settings.kafka_bootstrap
        self.stopping = False

    # ------------------------------------------------------------------ set-up

    def _prepare(self, s: Settings) -> Settings:
        data = s.data_dir
        try:
            (data / "logs").mkdir(parents=True, exist_ok=True)
            probe = data / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise ComponentStartError(f"data dir {data} is not writable: {e.strerror or e}") from e
        changes: dict = {"data_dir": data.resolve()}
        if not s.admin_token:
            tok_file = data / "admin_token"
            if tok_file.exists():
                token = tok_file.read_text().strip()
            else:
                token = secrets.token_urlsafe(24)
                tok_file.write_text(token + "\n")
                tok_file.chmod(0o600)
            changes["admin_token"] = token
        if not port_free(s.http_port, s.http_host):
            raise ComponentStartError(
                f"port {s.http_port} on {s.http_host} is taken (another citybrain or web server?); "
                f"stop it or use --http-port"
            )
        if s.ingest_processes < 1:
            raise ComponentStartError("--ingest-processes must be at least 1")
        if s.ingest_processes > 1 and (s.mqtt_url is None or not s.mqtt_v5):
            raise ComponentStartError(
                "several ingest processes share the feed through MQTT 5 shared subscriptions, which the "
                "embedded broker (MQTT 3.1.1) lacks: use --mqtt with Mosquitto, or one ingest process")
        if s.mqtt_url is None:
            port = s.mqtt_port
            if not port_free(port):
                port = free_port()
                log.warning("MQTT port %d is taken (another broker running?); the embedded broker uses %d "
                            "instead. To use the running broker: --mqtt mqtt://127.0.0.1:%d", s.mqtt_port, port, s.mqtt_port)
            changes.update(mqtt_port=port, mqtt_protocol="3.1.1")
            if s.mqtt_password_file:
                changes["mqtt_password_file"] = str(self._service_passwords(s))
            if s.mqtt_tls_cert and not s.mqtt_tls_ca:  # a self-signed certificate is its own CA
                changes["mqtt_tls_ca"] = s.mqtt_tls_cert
        if s.kafka_bootstrap is None:
            port = s.kafka_port
            if not port_free(port):
                port = free_port()
                log.warning("Kafka port %d is taken; the embedded broker uses %d instead", s.kafka_port, port)
            changes["kafka_port"] = port
            check_kafka_storage(s.kafka_storage)  # refused here, with the reason, not as a restart loop
        if s.simulate is None:
            changes["simulate"] = Path(s.city_file).resolve() == BUNDLED_CITY.resolve()
        return s.replace(**changes)

    def _service_passwords(self, s: Settings) -> Path:
        """The user's password file plus a fresh random password per service user for this run.

        The embedded broker then enforces the user's devices' passwords and ACL while the
        components it starts log in as themselves, with nothing to configure by hand.
        """
        users = mqtt_auth.load_passwords(s.mqtt_password_file)
        for component, user in SERVICE_USERS.items():
            password = secrets.token_urlsafe(18)
            self.mqtt_credentials[component] = (user, password)
            users[user] = mqtt_auth.hash_password(password)
        merged = s.run_dir / "mqtt_passwd"
        merged.parent.mkdir(parents=True, exist_ok=True)
        merged.write_text("".join(f"{u}:{h}\n" for u, h in users.items()))
        merged.chmod(0o600)
        return merged.resolve()

    def _plan(self) -> None:
        s = self.settings
        py = [sys.executable, "-m", "citybrain.component"]
        if s.mqtt_url is None:
            self.children.append(Child("mqtt-broker", py + ["mqtt-broker"], port=s.mqtt[1]))
        if s.kafka_bootstrap is None:
            kafka = Child("kafka-broker", tansu_command(s.kafka_port, storage=s.kafka_storage), port=s.kafka_port)
            kafka.on_restart.append(self._ensure_topics)  # memory storage comes back empty (s3: a no-op)
            self.children.append(kafka)
        for k in range(s.ingest_processes):  # one feed shared through $share/ (MQTT 5)
            name = "ingest" if k == 0 else f"ingest-{k + 1}"
            env = {} if k == 0 else {"CITYBRAIN_INGEST_NAME": name,
                                     "CITYBRAIN_INGEST_CLIENT_ID": f"{s.ingest_client_id}-{k + 1}"}
            self.children.append(Child(name, py + ["ingest"], role="ingest", env=env))
        for name in ("streams", "alerts", "dashboard"):
            self.children.append(Child(name, py + [name], port=s.http_port if name == "dashboard" else None))
        if s.simulate:
            self.children.append(Child("simulator", py + ["simulator"]))

    def _ensure_topics(self) -> None:
        topics = ensure_topics(self.settings, timeout_s=60)
        log.info("kafka topics ready (%d)", len(topics))

    # ------------------------------------------------------------------ children

    def _spawn(self, c: Child) -> None:
        c.log_path = self.settings.data_dir / "logs" / f"{c.name}.log"
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        env.update(c.env)
        if (c.role or c.name) in self.mqtt_credentials:
            user, password = self.mqtt_credentials[c.role or c.name]
            env.update(CITYBRAIN_MQTT_USERNAME=user, CITYBRAIN_MQTT_PASSWORD=password)
        out = open(c.log_path, "ab")  # noqa: SIM115 - owned by the child process
        try:
            c.proc = subprocess.Popen(c.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)
        except FileNotFoundError as e:
            raise ComponentStartError(f"{c.name}: cannot start {c.argv[0]!r}: {e.strerror}") from e
        finally:
            out.close()
        c.started_at = time.monotonic()
        c.state = "starting"
        log.info("started %s (pid %d), log %s", c.name, c.proc.pid, c.log_path)

    def _start_blocking(self, c: Child, timeout_s: float = 60.0) -> None:
        self._spawn(c)
        if c.port is not None:
            deadline = time.monotonic() + timeout_s
            while not wait_port("127.0.0.1", c.port, 0.5):
                if c.proc.poll() is not None:
                    tail = c.log_path.read_text(errors="replace")[-2000:] if c.log_path else ""
                    raise ComponentStartError(f"{c.name} exited with code {c.proc.returncode} while starting:\n{tail}")
                if time.monotonic() > deadline:
                    raise ComponentStartError(f"{c.name} did not open port {c.port} within {timeout_s:.0f}s")
        c.state = "up"

    def start(self) -> None:
        self._plan()
        s = self.settings
        log.info("citybrain up: city %s, data %s", s.city_file, s.data_dir)
        brokers = [c for c in self.children if c.name.endswith("-broker")]
        for c in brokers:
            self._start_blocking(c)
        self._ensure_topics()
        for c in self.children:
            if c not in brokers:
                self._start_blocking(c, timeout_s=90)
        mqtt = s.mqtt_url or f"mqtt://127.0.0.1:{s.mqtt_port}"
        log.info("all components started. Screen and API: http://%s:%d  MQTT: %s  Kafka: %s",
                 s.http_host, s.http_port, mqtt, s.kafka)
        log.info("admin token: %s (also in %s)", s.admin_token.get(), s.data_dir / "admin_token")

    def poll(self) -> None:
        """One round of watching: restart what died, update states, write the stats file."""
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                continue
            code = c.proc.poll()
            if code is None:
                if c.state == "restarting":
                    c.state = "up"
                if now - c.started_at > HEALTHY_AFTER_S:
                    c.backoff = 1.0
                continue
            if self.stopping:
                continue
            if c.state != "restarting":
                c.state = "restarting"
                c.next_start = now + c.backoff
                log.error("%s (pid %d) exited with code %s; restarting in %.0fs (restart #%d)",
                          c.name, c.proc.pid, code, c.backoff, c.restarts + 1)
                c.backoff = min(c.backoff * 2, MAX_BACKOFF_S)
            elif now >= c.next_start:
                c.restarts += 1
                try:
                    self._spawn(c)
                    c.state = "restarting"
                    if c.port is not None and wait_port("127.0.0.1", c.port, 20):
                        c.state = "up"
                    for hook in c.on_restart:
                        hook()
                except Exception as e:  # noqa: BLE001 - a failed restart is retried, never fatal
                    log.error("restart of %s failed: %s", c.name, e)
                    c.next_start = now + c.backoff
        self.write_stats()

    def write_stats(self) -> None:
        comps = {c.name: {"state": c.state, "pid": c.pid, "restarts": c.restarts} for c in self.children}
        comps.update({name: {"state": "external", "url": url} for name, url in self.external.items()})
        health.write_stats(self.settings.run_dir, "supervisor", {
            "state": "up", "components": comps,
            "mqtt": self.settings.mqtt_url or f"mqtt://127.0.0.1:{self.settings.mqtt_port}",
            "kafka": self.settings.kafka,
        })

    def stop(self) -> None:
        """Stop children in reverse start order: feeds first, brokers last."""
        self.stopping = True
        for c in reversed(self.children):
            if c.proc is None or c.proc.poll() is not None:
                continue
            log.info("stopping %s (pid %d)", c.name, c.proc.pid)
            c.proc.terminate()
            try:
                c.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", c.name, STOP_TIMEOUT_S)
                c.proc.kill()
                c.proc.wait()
            c.state = "down"
        self.write_stats()
        log.info("all components stopped")

    def run_forever(self) -> None:
        def _stop(signum, _frame):
            log.info("received %s, shutting down", signal.Signals(signum).name)
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            self.start()
            while True:
                self.poll()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.stop()
