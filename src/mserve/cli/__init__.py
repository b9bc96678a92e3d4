"""Thin commands: parse, call the job's Python API, print. The only place that reads the
environment and calls ``asyncio.run``."""
