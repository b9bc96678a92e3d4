"""Watching a serving server: ``mserve monitor`` reads its Prometheus metrics and shows
per-model rates. The live view's modules:

    snapshot.py  metrics text -> Snapshot (mserve or Triton, one normalised shape)   pure
    rates.py     two Snapshots -> Rates (req/s, latency percentiles, queue, batch)   pure
    scrape.py    GET URL/metrics -> Snapshot, with a timeout and errors that say why  I/O
    view.py      Rates -> a rich table with a header line, or a JSON-ready dict      pure

It never imports the server: it reads any server's ``/metrics``.
"""
