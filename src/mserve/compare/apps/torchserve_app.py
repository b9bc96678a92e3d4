"""TorchServe: archive the ONNX model with ``torch-model-archiver`` (the custom handler in
``torchserve_handler.py``, the archive's ``model-config.yaml`` written by the launcher), then
run ``torchserve --foreground`` with the launcher's ``config.properties`` until stopped.

``torchserve`` is a Python front for a Java server that it starts and waits on; stopping it
(SIGTERM or SIGINT here) runs ``torchserve --stop``, which stops the Java server and its
Python workers. Its pid file lies in the temporary folder, so the launcher points ``TMPDIR``
into the work folder: two TorchServes apart never meet."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from served_model import load_settings

HERE = Path(__file__).resolve().parent


def archive(bin_dir: Path, name: str, onnx_path: str, workdir: Path) -> Path:
    """Make ``NAME.mar`` in ``workdir/model-store``; returns the model store."""
    store = workdir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    extra = [str(HERE / "served_model.py"), str(workdir / "served-model.json")]
    subprocess.run(
        [
            *(str(bin_dir / "torch-model-archiver"), "--model-name", name, "--version", "1.0"),
            *("--serialized-file", onnx_path, "--handler", str(HERE / "torchserve_handler.py")),
            *("--extra-files", ",".join(extra)),
            *("--config-file", str(workdir / "model-config.yaml")),
            *("--export-path", str(store), "--force"),
        ],
        check=True,
    )
    return store


def main() -> None:
    """Archive, serve, and stop TorchServe when stopped."""
    settings = load_settings()
    workdir = Path(settings.workdir)
    bin_dir = Path(sys.executable).parent
    store = archive(bin_dir, settings.name, settings.onnx_path, workdir)
    torchserve = str(bin_dir / "torchserve")
    server = subprocess.Popen(
        [
            *(torchserve, "--start", "--foreground", "--ncs", "--disable-token-auth"),
            *("--model-store", str(store), "--models", f"{settings.name}={settings.name}.mar"),
            *("--ts-config", str(workdir / "config.properties")),
        ]
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.wait()
    except KeyboardInterrupt:
        subprocess.run([torchserve, "--stop"], check=False)
        server.wait()


if __name__ == "__main__":
    main()
