"""Simulated city feeds, recording, replay and scoring (for engineers)."""

from __future__ import annotations

#: how far back a faster-than-real-time feed of ``citybrain up`` starts (it then catches up)
CATCH_UP_S = 3600.0


def run(settings) -> None:
    """The simulator component of `citybrain up`: the demo city's feed until stopped.

    Faster than real time (``up --speed X``) it starts CATCH_UP_S back, replays that at X and
    then runs live: started at the wall clock, it would run ahead of it and ingest would reject
    everything past its 5-minute horizon as from the future.
    """
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
    start = time.time() - (CATCH_UP_S if settings.sim_speed > 1 else 0.0)
    feed = Feed(city, start, seed=settings.sim_seed, scenarios=suite(city, settings.sim_scenario))
    (settings.data_dir / "simulator-truth.json").write_text(__import__("json").dumps(feed.truth(), indent=1))
    publish_feed(settings, feed, settings.sim_speed, stop, devices=sorted(city.devices), live=True)
