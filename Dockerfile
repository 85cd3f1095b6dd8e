# syntax=docker/dockerfile:1
# cloud-phoenix: the application image. `phoenix serve` by default (the application, and
# its collector as a child unless PHOENIX_SERVE_COLLECTOR=false); the same image runs
# `phoenix collect` and `phoenix backup` (compose.yaml starts all three).
#
#   docker build -t cloud-phoenix .
#   docker run --rm -p 8080:8080 -v phoenix-home:/var/lib/phoenix cloud-phoenix
#
# The base is pinned by tag only: this file was written where no registry could be asked
# for the digest. Where one can, pin both stages to it as well, e.g.
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line)
#   FROM python:3.11-slim-bookworm@sha256:<that digest>
# and let a bot (Dependabot, Renovate) move it. Both stages must use the same base: the
# virtual environment's interpreter is a link to the base's /usr/local/bin/python3.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv

# The dependencies first, in a layer of their own: it is rebuilt only when the lock or the
# project's dependency list changes. requirements.lock is compiled with the dev extra, so it
# is given as constraints: every runtime package (and every package those need) is installed
# at its locked version, the test and lint tools (pytest, mypy, Playwright ...) not at all.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('runtime.txt', 'w').write('\n'.join(deps) + '\n')" \
 && /opt/venv/bin/pip install --no-cache-dir -r runtime.txt -c requirements.lock

# Then the application itself, without touching the dependencies. The build fails if a
# requirement is broken (pip check) or if any package is not at its locked version: one the
# lock does not name would otherwise come in at whatever version is newest.
COPY README.md deploy/docker/verify_locked.py ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python verify_locked.py requirements.lock --ignore cloud-phoenix \
 && /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/venv/lib
# Bytecode for everything, checked by hash rather than by mtime: the root file system is
# read-only at run time (PYTHONDONTWRITEBYTECODE) and a container restarted after /crash
# should not compile anything again.


FROM python:3.11-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cloud-phoenix" \
      org.opencontainers.image.description="The Phoenix application: phoenix serve, collect, backup" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# Every write goes under PHOENIX_HOME (journal/, db/, logs/, run/, backups/) or /tmp, so the
# container runs with a read-only root file system.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PHOENIX_HOME=/var/lib/phoenix \
    PHOENIX_HOST=0.0.0.0 \
    PORT=8080

# A fixed, unprivileged uid (not 0, not a system account that the host may also have), so
# that volumes and Kubernetes' runAsNonRoot/runAsUser agree with the image.
RUN groupadd --system --gid 10001 phoenix \
 && useradd --system --uid 10001 --gid phoenix --home-dir /var/lib/phoenix --no-create-home \
        --shell /usr/sbin/nologin phoenix \
 && install -d -o phoenix -g phoenix -m 0750 /var/lib/phoenix

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/backup-loop.sh /usr/local/bin/phoenix-backup-loop

WORKDIR /var/lib/phoenix
VOLUME ["/var/lib/phoenix"]
USER 10001:10001
EXPOSE 8080

# Liveness on /health with the interpreter already in the image (slim has no curl); proxies
# from the environment are ignored, the check is for this container's own port. `collect`
# and the backup loop serve no HTTP: turn the check off where they run (compose.yaml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=3)"]

# SIGTERM: uvicorn stops accepting, lets in-flight requests finish, the collector flushes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["phoenix"]
CMD ["serve"]
