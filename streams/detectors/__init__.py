"""Detectors: small causal objects, one per idea, River-style (``score_one`` before ``learn_one``).

Every detector turns one reading into a :class:`~streams.detectors.base.Finding` or ``None``;
scores are in [0, 1] and every finding carries its explanation (what, how far from normal,
since when).
"""
