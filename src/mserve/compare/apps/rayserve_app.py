"""Ray Serve: one deployment (one replica) with a FastAPI ingress running ONNX Runtime, as Ray
Serve's documentation builds a model server; Ray started small (the settings' threads as its
CPUs, no dashboard) and Serve's HTTP proxy on the settings' port. Plain JSON:
``POST /predict`` with ``{"instances": [...]}`` answers ``{"predictions": [...]}``; readiness
at ``/health`` (answered by the replica, so only once the deployment runs).

Ray Serve's batching: ``@serve.batch(max_batch_size=..., batch_wait_timeout_s=...)`` on a
method that gets one element per request (each a list of instances) and returns one result
per request.

No ``from __future__ import annotations`` here: the routes' annotations must be real types
when FastAPI reads them in the replica (a string annotation turns the body into a query
parameter, and every request fails with 422)."""

import signal
from itertools import accumulate
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from served_model import ServedModel, Settings, load_settings

app = FastAPI()


@serve.deployment(num_replicas=1)
@serve.ingress(app)
class Classifier:
    """The ONNX model as a Ray Serve deployment."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = ServedModel(settings)
        self.predict_batch.set_max_batch_size(settings.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(settings.max_delay_us / 1e6)

    @app.get("/health")
    def health(self) -> dict[str, Any]:
        return {}

    @app.post("/predict")
    async def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        instances = list(body["instances"])
        if self.settings.batching:
            return {"predictions": await self.predict_batch(instances)}
        return {"predictions": self.model.predict_rows(instances)}

    @serve.batch
    async def predict_batch(self, requests: list[list[Any]]) -> list[list[Any]]:
        """Each request's predictions, from one run over all their instances."""
        rows = self.model.predict_rows([instance for request in requests for instance in request])
        ends = accumulate(len(request) for request in requests)
        return [rows[end - len(r) : end] for r, end in zip(requests, ends, strict=True)]


def main() -> None:
    """Start Ray and Serve, deploy, and serve until stopped."""
    settings = load_settings()
    ray.init(num_cpus=max(1, settings.threads), include_dashboard=False)
    # stop as on Ctrl+C (after ray.init, which installs a handler of its own)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": settings.port})
        options = {"num_cpus": settings.threads}
        deployment = Classifier.options(ray_actor_options=options)  # type: ignore[attr-defined]
        serve.run(deployment.bind(settings), route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        pass
    finally:
        # the local Ray instance goes as a whole: ray.shutdown stops the processes it started,
        # and the actors (Serve's controller, proxy and replica) end with them. No
        # serve.shutdown first: when the whole process group is stopped together, Ray's own
        # processes are already going, and it would wait on them for good
        ray.shutdown()


if __name__ == "__main__":
    main()
