"""Ingest: MQTT in, validated typed records out to Kafka; bad input kept as dead letters."""
