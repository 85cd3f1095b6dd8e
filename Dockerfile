# cloud-phoenix: the application image. `phoenix up` by default, the one-host stack in the
# container: HAProxy on PORT (it retries a request whose worker died, never /crash), a
# gunicorn master whose uvicorn workers it respawns in well under a second, the collector
# and the CPU watch. /crash ends a worker, never the container. The same image runs
# `phoenix serve`, `phoenix collect` and `phoenix backup` (compose.yaml, deploy/).
#
#   docker build -t cloud-phoenix .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 -v phoenix-home:/var/lib/phoenix cloud-phoenix
#
# No `# syntax=` line: the Dockerfile frontend built into the engine's BuildKit builds it, so
# no frontend image has to be pulled (an engine that cannot reach a registry builds it too).
#
# Build arguments; each defaults to the ordinary online build:
#   BASE_IMAGE          the Python 3.11 base of every stage (python:3.11-slim-bookworm).
#   WHEELS              an image whose root holds the wheels of requirements.lock's runtime
#                       packages and of the build backend (default: none, `scratch`). With a
#                       wheelhouse, pip installs from it alone (--no-index). With buildx,
#                       `--build-context wheels=DIR` gives a folder instead.
#   RDS_CA_BUNDLE_URL   where the Amazon RDS CA bundle comes from (AWS's trust store); the
#                       DocumentDB connection string names it as tlsCAFile.
# `python -m cloud_phoenix.containers build` makes all three for an offline build (a base
# from Debian packages, a wheelhouse downloaded beforehand, a local CA file served on
# loopback) and runs the build with them: README, "Beyond one host".
#
# The base is pinned by tag only: this file was written where no registry could be asked
# for the digest. Where one can, pin it as well, e.g.
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line)
#   ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:<that digest>
# and let a bot (Dependabot, Renovate) move it. Every stage uses the same base: the virtual
# environment's interpreter is a link to the base's python3.

# checkov:skip=CKV_DOCKER_7: every FROM names a build argument, which checkov does not resolve; BASE_IMAGE's default carries a version tag, WHEELS's is scratch (tests/infra/test_container_files.py checks both)
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG WHEELS=scratch

# The wheelhouse, if any: mounted into the pip steps, never copied into an image.
FROM ${WHEELS} AS wheels


FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv

# The dependencies first, in a layer of their own: it is rebuilt only when the lock or the
# project's dependency list changes. requirements.lock is compiled with the dev extra, so it
# is given as constraints: every runtime package (and every package those need) is installed
# at its locked version, the test and lint tools (pytest, mypy, Playwright ...) not at all.
# A wheelhouse given (WHEELS) is the only source: an offline build never reaches out.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=bind,from=wheels,target=/wheels \
    python3 -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('runtime.txt', 'w').write('\n'.join(deps) + '\n')" \
 && if [ -n "$(ls -A /wheels)" ]; then set -- --no-index --find-links /wheels; fi \
 && /opt/venv/bin/pip install --no-cache-dir "$@" -r runtime.txt -c requirements.lock

# Then the application itself, without touching the dependencies. The build fails if a
# requirement is broken (pip check) or if any package is not at its locked version: one the
# lock does not name would otherwise come in at whatever version is newest.
COPY README.md deploy/docker/verify_locked.py ./
COPY src ./src
RUN --mount=type=bind,from=wheels,target=/wheels \
    if [ -n "$(ls -A /wheels)" ]; then set -- --no-index --find-links /wheels; fi \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps "$@" . \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python verify_locked.py requirements.lock --ignore cloud-phoenix \
 && /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/venv/lib
# Bytecode for everything, checked by hash rather than by mtime: the root file system is
# read-only at run time (PYTHONDONTWRITEBYTECODE) and a container restarted after /crash
# should not compile anything again.


# The CA bundle that verifies DocumentDB's certificate (not signed by a public CA), in a
# stage of its own so that a new URL rebuilds nothing else. The build fails if what comes
# back holds no CA certificate; the build log shows its SHA-256 and certificate count.
FROM ${BASE_IMAGE} AS rds-ca
ARG RDS_CA_BUNDLE_URL=https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
COPY deploy/docker/fetch_ca_bundle.py /usr/local/lib/
RUN python3 /usr/local/lib/fetch_ca_bundle.py "$RDS_CA_BUNDLE_URL" /rds-global-bundle.pem


FROM ${BASE_IMAGE} AS runtime

# HAProxy from the base's Debian release, the edge of `phoenix up` inside the container;
# tini as process 1: it passes signals on to `phoenix` and reaps what a killed worker leaves
# (its key maker, reparented to process 1), which nothing else would wait for; PostgreSQL's
# client tools, for `phoenix backup` of a PostgreSQL store (pg_dump, pg_restore: the Swarm
# stack's backup service). Not pinned to a version: Debian's security updates replace them
# in place, and an old pin would stop building once the archive drops that version.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy tini \
        postgresql-client \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# Every write goes under PHOENIX_HOME (journal/, db/, logs/, run/ with haproxy.cfg, the
# status and the metrics folder, backups/, instance-id) or /tmp (gunicorn's worker heartbeat
# files: give it a tmpfs), so the container runs with a read-only root file system.
# PORT 8080, not 80: the stack runs as an unprivileged user, HAProxy included.
# PHOENIX_MIN_WORKERS=2: a /crash leaves a sibling worker for the edge to retry on.
# PHOENIX_BACKUP_AT=off: in a cluster the backup is a job of its own (compose's `backup`
# service, the Kubernetes CronJob, AWS Backup), not one in every replica.
# PHOENIX_LOG_TO=stdout: every part of the stack logs to the container's output, where
# `docker logs`, `kubectl logs` and awslogs read it (files would go with the volume).
# Text at a terminal; an orchestrator sets PHOENIX_LOG_FORMAT=json.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PHOENIX_HOME=/var/lib/phoenix \
    PHOENIX_HOST=0.0.0.0 \
    PORT=8080 \
    PHOENIX_MIN_WORKERS=2 \
    PHOENIX_BACKUP_AT=off \
    PHOENIX_LOG_TO=stdout

# A fixed, unprivileged uid (not 0, not a system account that the host may also have), so
# that volumes and Kubernetes' runAsNonRoot/runAsUser agree with the image. run/ is open to
# all (sticky, as /tmp) inside the 0750 home: a Swarm replica mounts a tmpfs there, its own
# run files beside a task slot's shared volume (deploy/swarm/stack.yml), and Docker gives a
# tmpfs its mount point's mode but not its owner.
RUN groupadd --system --gid 10001 phoenix \
 && useradd --system --uid 10001 --gid phoenix --home-dir /var/lib/phoenix --no-create-home \
        --shell /usr/sbin/nologin phoenix \
 && install -d -o phoenix -g phoenix -m 0750 /var/lib/phoenix \
 && install -d -m 1777 /var/lib/phoenix/run

COPY --from=builder /opt/venv /opt/venv
COPY --from=rds-ca --chmod=0644 /rds-global-bundle.pem /etc/ssl/certs/rds-global-bundle.pem
COPY --chmod=0755 deploy/docker/backup-loop.sh /usr/local/bin/phoenix-backup-loop

# After every step that takes time: a new revision changes the labels and nothing else.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cloud-phoenix" \
      org.opencontainers.image.description="The Phoenix application: phoenix up (edge, workers, collector), serve, collect, backup" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

WORKDIR /var/lib/phoenix
VOLUME ["/var/lib/phoenix"]
USER 10001:10001
EXPOSE 8080

# Liveness on /health through the container's own edge, with the interpreter already in the
# image (slim has no curl), at the address the edge listens on: PHOENIX_HOST (a replica on
# the host network listens on an address of its own, e.g. 127.0.1.3), the loopback for an
# any-address. Proxies from the environment are ignored: the check is for this container's
# own port. `collect` and the backup loop serve no HTTP: turn the check off where they run
# (compose.yaml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; h = os.environ.get('PHOENIX_HOST') or '127.0.0.1'; h = {'0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h = '[%s]' % h if ':' in h else h; r.build_opener(r.ProxyHandler({})).open('http://%s:%s/health' % (h, os.environ.get('PORT', '8080')), timeout=3)"]

# SIGTERM (tini passes it on): the edge stops accepting and finishes what it holds, the
# workers drain, the collector's last pass commits every journal line; then exit 0. tini -s:
# it reaps orphans also where it is not process 1 (an engine's own init, `docker run --init`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "-s", "--", "phoenix"]
CMD ["up"]
