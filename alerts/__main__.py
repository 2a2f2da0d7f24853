from alerts.service import run
from citybrain import logs
from citybrain.settings import Settings

logs.setup("alerts")
run(Settings.from_env())
