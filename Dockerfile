# Model-serving image for SageMaker hosting (bring your own container).
# SageMaker runs `docker run IMAGE serve`, mounts the model artifact at
# /opt/ml/model and talks to port 8080 (GET /ping, POST /invocations).
#   docker build -t scones-model .
#   docker run --rm -p 8080:8080 -v "$PWD/models/bicycle-motorcycle:/opt/ml/model:ro" scones-model serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/program

# Runtime dependencies only, at the versions pinned for the rest of the project.
COPY requirements/run.lock requirements/run.lock
RUN pip install --constraint requirements/run.lock \
        onnxruntime numpy pillow fastapi uvicorn boto3 aws-sam-translator

# The package, installed in place so template.yaml (the defaults) sits at its root.
COPY pyproject.toml README.md template.yaml ./
COPY src/ src/
COPY layers/shared/scones_core/ layers/shared/scones_core/
RUN pip install --no-deps --editable .

COPY docker/serve /usr/local/bin/serve
RUN chmod 0755 /usr/local/bin/serve \
    && useradd --system --no-create-home --uid 10001 model
USER model

EXPOSE 8080
CMD ["serve"]
