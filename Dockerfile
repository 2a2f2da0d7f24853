# One image for every citybrain service; the command picks the component.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY citybrain ./citybrain
COPY ingest ./ingest
COPY streams ./streams
COPY alerts ./alerts
COPY dashboard ./dashboard
COPY simulators ./simulators
RUN pip install --no-cache-dir .
ENV CITYBRAIN_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["python", "-m", "citybrain.component"]
