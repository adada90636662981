#!/bin/sh
# The image's entry point: `serve` (default), `worker`, `beat`, or any other command as given.
set -eu

case "${1:-serve}" in
    serve)
        if [ "${GATEWAY_MIGRATE:-true}" = "true" ]; then
            # Building an index on a large ledger may take longer than the statement timeout
            # that protects requests and jobs.
            GATEWAY_DB_STATEMENT_TIMEOUT_MS=0 python manage.py migrate --noinput
        fi
        # Prometheus multiprocess mode: every worker writes its metrics here; /metrics adds
        # them up. Emptied at start so a previous container's counts do not linger.
        export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus}"
        rm -rf "$PROMETHEUS_MULTIPROC_DIR"
        mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        # At SIGTERM each worker drains for GATEWAY_DRAIN_SECONDS (long Claude Code streams
        # finish), then writes pending usage to the ledger and exits
        # (gatewaysite/workers.py); the arbiter kills what is left only FLUSH_SECONDS later.
        # gunicorn's --timeout keeps its default (30 s): it catches a hung worker, and a
        # draining worker keeps reporting in. The gateway reads the same variables.
        export GATEWAY_DRAIN_SECONDS="${GATEWAY_DRAIN_SECONDS:-600}"
        export GATEWAY_TRUSTED_PROXIES="${GATEWAY_TRUSTED_PROXIES:-}"
        FLUSH_SECONDS=30
        # WEB_CONCURRENCY sets the worker count, HOST the address to bind (all by default);
        # GUNICORN_CMD_ARGS adds any other option.
        # Forwarded headers are believed only from GATEWAY_TRUSTED_PROXIES (empty: from no one;
        # gunicorn's own default would trust 127.0.0.1).
        # No control socket: it would go to $HOME/.gunicorn, which the image does not have.
        exec gunicorn gatewaysite.asgi:application \
            --worker-class gatewaysite.workers.DrainingUvicornWorker \
            --bind "${HOST:-0.0.0.0}:${PORT:-8080}" \
            --workers "${WEB_CONCURRENCY:-2}" \
            --graceful-timeout "$((GATEWAY_DRAIN_SECONDS + FLUSH_SECONDS))" \
            --forwarded-allow-ips "$GATEWAY_TRUSTED_PROXIES" \
            --no-control-socket
        ;;
    worker)
        exec celery -A gatewaysite worker --loglevel "${LOG_LEVEL:-INFO}"
        ;;
    beat)
        # The schedule file goes to /tmp: the image's /app is not writable by the gateway user.
        exec celery -A gatewaysite beat --loglevel "${LOG_LEVEL:-INFO}" \
            --schedule /tmp/celerybeat-schedule
        ;;
    *)
        exec "$@"
        ;;
esac
