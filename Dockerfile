# Model-serving image for SageMaker hosting (bring your own container).
# SageMaker runs `docker run IMAGE serve`, unpacks the model artifact into
# /opt/ml/model and talks to port 8080 (GET /ping, POST /invocations).
#   docker build -t scones-model .
#   docker run --rm -p 8080:8080 -v "$PWD/models/bicycle-motorcycle:/opt/ml/model:ro" scones-model serve
# Without Docker, `make image` builds it with buildah on a Debian base made by
# mmdebstrap (scripts/build_image.sh passes BASE, since registry pulls fail there).
# BASE is any Debian-like image with python3 (3.11, matching the pins) and its venv
# module.
ARG BASE=python:3.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7: the base is the ARG above, a pinned tag checkov cannot resolve through ARG
# checkov:skip=CKV_DOCKER_2: SageMaker checks health itself with GET /ping; it ignores HEALTHCHECK
# checkov:skip=CKV_DOCKER_3: SageMaker hosting expects containers to run as root (see USER below)
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/program
# onnxruntime's usage telemetry: an endpoint has no business sending it.
ENV ORT_DISABLE_TELEMETRY=1

# The server's packages only (no aws-sam-translator, torch or moto), pinned as in
# requirements/run.lock; --no-deps makes the file the whole environment.
COPY requirements/serve.txt /opt/program/requirements.txt
RUN python3 -m venv /opt/venv \
    && pip install --no-deps --requirement /opt/program/requirements.txt \
    && pip check \
    && pip uninstall --yes pip setuptools

# The server and what it imports: the model artifact loader (with the model folder's
# file names, scones/paths.py) and the shared image rules. Not the CLI, the template or
# the training code.
COPY layers/shared/scones_core/ /opt/program/scones_core/
COPY src/scones/__init__.py src/scones/paths.py /opt/program/scones/
COPY src/scones/model/__init__.py src/scones/model/artifact.py src/scones/model/external_data.py /opt/program/scones/model/
COPY src/scones/serving/ /opt/program/scones/serving/
COPY LICENSE /opt/program/LICENSE
RUN python3 -m compileall -q /opt/program

COPY docker/serve /usr/local/bin/serve
RUN chmod 0755 /usr/local/bin/serve
# No USER: SageMaker hosting expects its containers to run as root, and says another
# user can meet permission problems with what it mounts (docs: "Custom Inference Code
# with Hosting Services"). The server needs no privilege: it reads /opt/ml/model,
# listens on 8080 and writes nothing.

EXPOSE 8080
CMD ["serve"]
