"""citybrain: the city-sensing stream processor and command center.

This package is the small domain every stage imports: the city model, the typed event records,
the event-time clock, the settings and the shared vocabulary. The stages (``ingest``,
``streams``, ``alerts``, ``dashboard``, ``simulators``) depend on it and never on each other's
internals; ``citybrain.cli`` and ``citybrain.supervisor`` are the composition root.
"""

__version__ = "0.1.0"
