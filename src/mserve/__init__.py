"""mserve: convert, serve, deploy, monitor and evaluate machine-learning models."""

__version__ = "0.1.0"
