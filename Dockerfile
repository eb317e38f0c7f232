# One image for every flotilla component: the entrypoint is `flotilla`, and each Deployment of the
# Helm chart (helm/flotilla) picks its sub-command: `operator run`, `placement run`, `router run`.
# Build: docker build -t ghcr.io/flotilla-dev/flotilla:0.1.0 .
# (No image is built or published from the development machines: they have no container engine.)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package needs: see .dockerignore.
COPY pyproject.toml setup.py README.md ./
COPY flotilla ./flotilla
COPY operator ./operator
COPY router ./router
COPY placement ./placement
# The router serves the learned length predictor with the `predictor` extra (no torch).
RUN python -m venv /opt/flotilla \
 && /opt/flotilla/bin/pip install '.[predictor]'

FROM python:3.11-slim
ENV PATH=/opt/flotilla/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/flotilla /opt/flotilla
# A fixed non-root uid/gid, matching the chart's podSecurityContext (runAsUser 10001).
RUN groupadd --system --gid 10001 flotilla \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin flotilla
USER 10001:10001
ENTRYPOINT ["flotilla"]
CMD ["--help"]
