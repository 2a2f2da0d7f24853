"""Simulated city feeds, recording, replay and scoring (for engineers)."""

from __future__ import annotations


def run(settings) -> None:
    """The simulator component of `citybrain up`: the demo city's feed until stopped."""
    import signal
    import threading
    import time

    from citybrain.city import load_city
    from simulators.feed import Feed
    from simulators.publish import publish_feed
    from simulators.scenarios import suite

    city = load_city(settings.city_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    start = time.time()
    feed = Feed(city, start, seed=settings.sim_seed, scenarios=suite(city, settings.sim_scenario))
    (settings.data_dir / "simulator-truth.json").write_text(__import__("json").dumps(feed.truth(), indent=1))
    publish_feed(settings, feed, settings.sim_speed, stop, devices=sorted(city.devices))
