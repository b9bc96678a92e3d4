"""Deployment assets for mserve: each module renders files (dashboards, rules, configs) from
typed arguments and writes them where told. Nothing here shells out or opens a socket; applying
the files is the operator's tool's job (Grafana, Prometheus, docker, kubectl)."""
