"""The streams stage: event-time windows, detectors and grid fusion between ``signals`` and ``warnings``.

The processing core (:mod:`streams.core`) is pure: batches in, warnings and dead letters out, so
it is tested without a broker and replayed at any speed with identical results. The Faust worker
(:mod:`streams.worker`) is a thin shell around it.
"""
