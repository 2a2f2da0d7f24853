from citybrain import logs
from citybrain.settings import Settings
from ingest.service import run

logs.setup("ingest")
run(Settings.from_env())
