"""Run one component in this process: ``python -m citybrain.component NAME``.

The supervisor starts every component this way with the settings in the environment
(``Settings.to_env``), so a component can also be started by hand, or on another machine, with
the same environment. Imports are lazy so one stage's import error cannot break the others.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable

from citybrain import logs
from citybrain.settings import Settings


def _amqtt(settings: Settings) -> None:
    from citybrain.brokers import run_amqtt

    asyncio.run(run_amqtt(settings.mqtt[1], settings.mqtt[0], settings.mqtt_password_file, settings.mqtt_acl_file,
                         settings.mqtt_tls_cert, settings.mqtt_tls_key))


#: component name -> "module:function" taking the settings (or a callable)
COMPONENTS: dict[str, str | Callable[[Settings], None]] = {
    "mqtt-broker": _amqtt,
    "ingest": "ingest.service:run",
    "streams": "streams.worker:run",
    "alerts": "alerts.service:run",
    "dashboard": "dashboard.server:run",
    "simulator": "simulators:run",
}


def resolve(name: str) -> Callable[[Settings], None]:
    target = COMPONENTS[name]
    if callable(target):
        return target
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in COMPONENTS:
        print(f"usage: python -m citybrain.component {{{','.join(COMPONENTS)}}}", file=sys.stderr)
        return 2
    name = argv[0]
    logs.setup(name)
    resolve(name)(Settings.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
