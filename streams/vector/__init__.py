"""Vectorised (struct-of-arrays) twins of the per-device monitors: an experiment, not wired in.

:class:`~streams.vector.bank.SensorBank` steps the sensor monitors of many devices at once
with numpy and gives exactly the findings and state of :class:`streams.monitor.Monitor`.
"""

from streams.vector.bank import SensorBank

__all__ = ["SensorBank"]
