"""The command center: the Dash "city brain" screen and the HTTP API on one Flask server.

Entry points: :func:`dashboard.server.create_app` (tests, embedding) and
:func:`dashboard.server.run` (``python -m dashboard``, the supervisor's ``dashboard`` component).
"""
