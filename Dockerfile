# One image for every Consentry service (docker-compose.yml picks the command).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY schemas ./schemas
COPY examples ./examples
RUN pip install --no-cache-dir . && useradd --system consentry
USER consentry
ENV CONSENTRY_POLICY=/app/examples/policy.yaml CONSENTRY_SCHEMA_DIR=/app/schemas
ENTRYPOINT ["consentry"]
