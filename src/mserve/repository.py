"""The model repository on disk: one folder per model, numbered version folders inside.

    models/
      digits/
        config.yaml        optional; without it inputs and outputs come from the model itself
        1/model.onnx
        2/model.onnx

Scanning never raises for one bad model: each entry carries either what to load or why it
cannot be loaded, so one broken model never keeps the others from loading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mserve.config import CONFIG_FILE, ModelConfig, load_model_config
from mserve.errors import ConfigError, MserveError, RepositoryError

MODEL_FILES = {"onnxruntime": "model.onnx", "openvino": "model.onnx"}  # OpenVINO reads ONNX
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model folder: its config (None when read from the model), the versions to serve, or
    the error that keeps it from loading."""

    name: str
    path: Path
    config: ModelConfig | None = None
    has_config_file: bool = False
    versions: dict[int, Path] = field(default_factory=dict)  # selected by the version policy
    available: tuple[int, ...] = ()  # every version folder with a model file
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_version(folder: str) -> bool:
    """True for a version folder's name: a plain decimal number > 0, written as ``str(n)`` writes
    it (so "01" or non-ASCII digits, which would name a folder other than ``root/name/1``, are
    not versions)."""
    return folder.isascii() and folder.isdigit() and folder == str(int(folder)) and folder != "0"


def valid_model_name(name: str) -> bool:
    """True for names that are safe as a single path component (no traversal, no hidden files)."""
    return bool(_NAME.match(name)) and name not in (".", "..")


class Repository:
    """A model repository rooted at a directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RepositoryError(str(self.root), "not a directory; expected a model repository")

    def names(self) -> list[str]:
        """The model folders present, sorted."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def scan(self) -> list[ModelSource]:
        """Every model folder, each with what to load or why it cannot be loaded."""
        return [self.source(name) for name in self.names()]

    def source(self, name: str) -> ModelSource:
        """One model folder; raises RepositoryError only for a name not in the repository."""
        if not valid_model_name(name):
            raise RepositoryError(
                name,
                "not a valid model name; expected letters, digits, '_', '.', '-' "
                "(starting with a letter or digit), at most 128 characters",
            )
        path = self.root / name
        if not path.is_dir():
            raise RepositoryError(str(path), "no such model folder in the repository")
        config: ModelConfig | None = None
        config_path = path / CONFIG_FILE
        has_config = config_path.is_file()
        try:
            if has_config:
                config = load_model_config(config_path, default_name=name)
            backend = config.backend if config else "onnxruntime"
            filename = MODEL_FILES[backend]
            available = sorted(
                int(v.name)
                for v in path.iterdir()
                if _is_version(v.name) and v.is_dir() and (v / filename).is_file()
            )
            if not available:
                raise RepositoryError(
                    str(path), f"no version folder with a {filename}; expected e.g. 1/{filename}"
                )
            policy = config.version_policy if config else None
            selected = policy.select(available) if policy else available[-1:]
            if not selected:
                raise RepositoryError(
                    str(path),
                    f"the version policy selects none of the versions present "
                    f"({', '.join(map(str, available))})",
                )
        except (ConfigError, RepositoryError) as exc:
            return ModelSource(name, path, config, has_config, error=str(exc))
        except MserveError as exc:  # pragma: no cover - defensive: any other of ours
            return ModelSource(name, path, config, has_config, error=str(exc))
        return ModelSource(
            name=name,
            path=path,
            config=config,
            has_config_file=has_config,
            versions={v: path / str(v) / filename for v in selected},
            available=tuple(available),
        )


def write_model(root: Path, config: ModelConfig, version: int, model_bytes: bytes) -> Path:
    """Place a model file and its config.yaml in the repository; returns the model file's path."""
    from mserve.config import write_model_config

    if not valid_model_name(config.name):
        raise RepositoryError(config.name, "not a valid model name")
    folder = Path(root) / config.name
    target = folder / str(version) / MODEL_FILES[config.backend]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(model_bytes)
    tmp.replace(target)  # atomic: a watcher never sees half a file
    write_model_config(folder / CONFIG_FILE, config)
    return target
