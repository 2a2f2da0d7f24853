"""``citybrain audit verify``: prove the audit log untampered, or name the first bad entry."""

from __future__ import annotations

import argparse

from citybrain.settings import Settings


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.audit import verify
    from alerts.store import Store

    v = verify(Store(settings.store))
    if v.ok:
        print(f"audit log OK: {v.entries} entries, hash chain intact")
        return 0
    print(f"audit log TAMPERED: entry {v.first_bad}: {v.problem}")
    return 1


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", parents=[common], help="verify the hash chain of the audit log")
    v.set_defaults(handler=_verify)
