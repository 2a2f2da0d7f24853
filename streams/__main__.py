"""``python -m streams``: run the streams worker with the settings from the environment."""

from citybrain import logs
from citybrain.settings import Settings
from streams.worker import run

logs.setup("streams")
run(Settings.from_env())
