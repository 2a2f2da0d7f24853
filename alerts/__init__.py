"""Alerts: the incident service. Warnings become incidents; incidents are acknowledged,
dispatched (CAP 1.2 to the unit), followed on scene, resolved and closed, every step audited."""
