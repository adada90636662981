#!/bin/sh
# The image's entry point: `serve` (default), `worker`, `beat`, or any other command as given.
set -eu

case "${1:-serve}" in
    serve)
        if [ "${GATEWAY_MIGRATE:-true}" = "true" ]; then
            python manage.py migrate --noinput
        fi
        # Prometheus multiprocess mode: every worker writes its metrics here; /metrics adds
        # them up. Emptied at start so a previous container's counts do not linger.
        export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus}"
        rm -rf "$PROMETHEUS_MULTIPROC_DIR"
        mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        # WEB_CONCURRENCY sets the worker count; GUNICORN_CMD_ARGS adds any other option.
        # No control socket: it would go to $HOME/.gunicorn, which the image does not have.
        exec gunicorn gatewaysite.asgi:application \
            --worker-class uvicorn_worker.UvicornWorker \
            --bind "0.0.0.0:${PORT:-8080}" \
            --workers "${WEB_CONCURRENCY:-2}" \
            --graceful-timeout 30 \
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
