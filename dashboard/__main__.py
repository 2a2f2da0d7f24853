"""``python -m dashboard``: run the command center with settings from the environment."""

from dashboard.server import main

main()
