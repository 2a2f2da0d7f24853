"""``citybrain simulate | record | replay | score`` (CONTRACT section 4)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from citybrain.settings import Settings


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _simulate(args, settings: Settings) -> int:
    from citybrain.city import load_city
    from simulators.feed import Faults, Feed
    from simulators.publish import publish_feed
    from simulators.scenarios import suite

    city = load_city(settings.city_file)
    duration = args.duration
    if args.speed > 1 and duration is None:
        duration = 3600.0  # faster than real time must end before reaching the wall clock
    start = args.start if args.start is not None else (time.time() - duration if args.speed > 1 else time.time())
    faults = Faults(stuck=0.001, spike=0.001) if args.faults else Faults()
    feed = Feed(city, start, seed=args.seed, scenarios=suite(city, args.scenario, args.scenario_duration),
                duration=duration, faults=faults)
    if args.truth:
        Path(args.truth).write_text(json.dumps(feed.truth(), indent=1))
    summary = publish_feed(settings, feed, args.speed, _stop_on_signals(), devices=sorted(city.devices),
                           live=args.start is None)  # (an explicit start is the engineer's to choose)
    print(json.dumps({"scenario": args.scenario, "seed": args.seed, **summary}))
    return 0


def _record(args, settings: Settings) -> int:
    from simulators.recording import record

    n = record(settings, Path(args.out), args.topic, _stop_on_signals(), args.max_messages, args.duration)
    print(f"recorded {n} messages to {args.out}")
    return 0


def _replay(args, settings: Settings) -> int:
    from simulators import recording
    from simulators.publish import publish_feed

    if args.csv:
        from citybrain.city import load_city

        if not args.device:
            print("citybrain replay --csv needs --device ID", file=sys.stderr)
            return 2
        msgs = list(recording.csv_feed(Path(args.csv), load_city(settings.city_file), args.device,
                                       time.time() if args.shift_to_now else None))
        total = len(msgs)
    else:
        if not args.file:
            print("citybrain replay needs FILE or --csv FILE", file=sys.stderr)
            return 2
        msgs = recording.read(Path(args.file))
        total = recording.count(Path(args.file))
    summary = publish_feed(settings, msgs, args.speed, _stop_on_signals(), progress_total=total)
    print(json.dumps(summary))
    return 0


def _score(args, settings: Settings) -> int:
    from citybrain.city import load_city
    from simulators.score import score, table

    truth = json.loads(Path(args.truth).read_text())
    if args.incidents:
        incidents = json.loads(Path(args.incidents).read_text())
    else:
        token = args.token or settings.admin_token.get()
        req = urllib.request.Request(f"{args.api.rstrip('/')}/api/incidents?state=all",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            incidents = json.loads(r.read())
    city = load_city(settings.city_file)
    result = score(truth, incidents, city, args.device_hours or len(city.devices) * max(1.0, args.hours))
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if result["missed"] == 0 else 1


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("simulate", parents=[common], help="publish a simulated city feed with scenarios")
    p.add_argument("--scenario", default="demo", help="demo, quiet, all, or one of the catalogue (flood, fire, ...)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--speed", type=float, default=1.0, help="x real time (event times do not change)")
    p.add_argument("--start", type=float, help="simulated start, epoch seconds (default now; now - duration if speed > 1)")
    p.add_argument("--duration", type=float, help="seconds of event time to simulate (default: until stopped)")
    p.add_argument("--scenario-duration", type=float, default=600.0)
    p.add_argument("--truth", help="write the ground truth JSON here")
    p.add_argument("--faults", action="store_true", help="also inject stuck values and spikes")
    p.set_defaults(handler=_simulate)

    r = sub.add_parser("record", parents=[common], help="record an MQTT feed to a file")
    r.add_argument("--out", required=True)
    r.add_argument("--topic", default="city/#")
    r.add_argument("--max-messages", type=int)
    r.add_argument("--duration", type=float)
    r.set_defaults(handler=_record)

    rp = sub.add_parser("replay", parents=[common], help="publish a recording (or a CSV) back")
    rp.add_argument("file", nargs="?")
    rp.add_argument("--speed", type=float, default=1.0)
    rp.add_argument("--csv", help="a timestamp,value CSV (e.g. NAB) to publish as a device's SenML feed")
    rp.add_argument("--device", help="with --csv: the city device the values belong to")
    rp.add_argument("--shift-to-now", action="store_true", help="with --csv: move times so the last row is now")
    rp.set_defaults(handler=_replay)

    s = sub.add_parser("score", parents=[common], help="score a run's incidents against scenario ground truth")
    s.add_argument("--truth", required=True)
    s.add_argument("--incidents", help="JSON file of incidents (default: read the API)")
    s.add_argument("--api", default="http://127.0.0.1:8050")
    s.add_argument("--token")
    s.add_argument("--hours", type=float, default=1.0, help="length of the run, for false incidents per device-hour")
    s.add_argument("--device-hours", type=float)
    s.add_argument("--out")
    s.set_defaults(handler=_score)
