"""The programs ``mserve compare`` starts, one per serving system (``*_app.py``), and the model
they share (``served_model.py``). Each runs in its system's own virtual environment with this
folder on ``PYTHONPATH``: they import one another by bare name, never through ``mserve``."""
