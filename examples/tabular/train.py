"""The scenario's three models, trained on data sets that scikit-learn ships (nothing is
downloaded), and saved the way their users save them: XGBoost's JSON model file, LightGBM's text
model file, a joblib pickle of a scikit-learn pipeline.

Features are float32 from the start, because that is what the ONNX models and every client send:
the original model's predictions are taken on exactly the values the server receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from lightgbm import LGBMClassifier
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

SEED = 0
TEST_SHARE = 0.25


@dataclass(frozen=True)
class Trained:
    """A trained model, the file ``mserve convert`` reads, and its predictions on the test set."""

    name: str  # the model's name in the repository
    framework: str  # xgboost, lightgbm or sklearn
    dataset: str  # the scikit-learn loader, e.g. load_breast_cancer
    description: str  # what was trained, in words
    source: Path  # the saved model file
    trust: bool  # a pickle: `mserve convert` needs --trust
    x_test: np.ndarray  # float32 rows
    y_test: np.ndarray  # int64 true labels
    labels: np.ndarray  # int64 labels the original model predicts on x_test
    probabilities: np.ndarray  # float32 class probabilities the original model gives x_test
    x_train: np.ndarray  # float32 rows the model was fitted on

    @property
    def accuracy(self) -> float:
        """The original model's accuracy on the test set."""
        return float(np.mean(self.labels == self.y_test))

    @property
    def classes(self) -> int:
        """The number of classes."""
        return int(self.probabilities.shape[1])


@dataclass(frozen=True)
class Recipe:
    """How one model is made: its data set, its estimator, how it is saved."""

    name: str
    framework: str
    loader: Callable[..., Any]
    description: str
    make: Callable[[], Any]
    save: Callable[[Any, Path], Path]  # writes the model into a folder; returns the file
    trust: bool = False


def _save_xgboost(model: Any, folder: Path) -> Path:
    path = folder / "xgboost.json"  # XGBoost's own format: trees and parameters, no code
    model.save_model(path)
    return path


def _save_lightgbm(model: Any, folder: Path) -> Path:
    path = folder / "lightgbm.txt"  # LightGBM's text model file
    model.booster_.save_model(path)
    return path


def _save_pickle(model: Any, folder: Path) -> Path:
    path = folder / "pipeline.joblib"  # unpickling runs code: `mserve convert --trust`
    joblib.dump(model, path)
    return path


RECIPES = (
    Recipe(
        name="cancer-xgboost",
        framework="xgboost",
        loader=load_breast_cancer,
        description="XGBClassifier, 100 trees of depth 4",
        make=lambda: XGBClassifier(
            n_estimators=100, max_depth=4, learning_rate=0.1, n_jobs=1, random_state=SEED
        ),
        save=_save_xgboost,
    ),
    Recipe(
        name="wine-lightgbm",
        framework="lightgbm",
        loader=load_wine,
        description="LGBMClassifier, 100 rounds of 3 trees (one per class), 15 leaves",
        make=lambda: LGBMClassifier(
            n_estimators=100,
            num_leaves=15,
            min_child_samples=5,
            n_jobs=1,
            verbose=-1,
            random_state=SEED,
        ),
        save=_save_lightgbm,
    ),
    Recipe(
        name="cancer-pipeline",
        framework="sklearn",
        loader=load_breast_cancer,
        description="Pipeline: StandardScaler, then LogisticRegression",
        make=lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        save=_save_pickle,
        trust=True,
    ),
)


def split(loader: Callable[..., Any]) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test): float32 features, int64 labels, a stratified split
    that is the same on every run."""
    x, y = loader(return_X_y=True)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SHARE, random_state=SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def train(recipe: Recipe, folder: Path) -> Trained:
    """Fit the recipe's model on its training split, save it into ``folder``, and predict its
    test split."""
    x_train, x_test, y_train, y_test = split(recipe.loader)
    model = recipe.make()
    model.fit(x_train, y_train)
    folder.mkdir(parents=True, exist_ok=True)
    return Trained(
        name=recipe.name,
        framework=recipe.framework,
        dataset=recipe.loader.__name__,
        description=recipe.description,
        source=recipe.save(model, folder),
        trust=recipe.trust,
        x_test=x_test,
        y_test=y_test,
        labels=np.asarray(model.predict(x_test), np.int64),
        probabilities=np.asarray(model.predict_proba(x_test), np.float32),
        x_train=x_train,
    )


def write_data(trained: Trained, folder: Path) -> tuple[Path, Path]:
    """The ``.npz`` files ``mserve convert`` reads: the labelled test set (``--eval``) and the
    parity inputs (``--inputs``): the test rows first, then the rest of the data set, as
    `mserve convert` compares the first 512 rows it is given; both keyed by the model's input."""
    folder.mkdir(parents=True, exist_ok=True)
    test = folder / f"{trained.name}.test.npz"
    every = folder / f"{trained.name}.all.npz"
    np.savez(test, input=trained.x_test, labels=trained.y_test)
    np.savez(every, input=np.concatenate([trained.x_test, trained.x_train]))
    return test, every
