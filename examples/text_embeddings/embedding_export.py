"""The model's conversion with mserve (fp32 and int8-dynamic), and its parity with
sentence-transformers' own embeddings on real text."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docstring_texts as texts
import numpy as np
import sentence_embedder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scenario

MODEL = "minilm"
INT8 = f"{MODEL}-int8-dynamic"
MAX_BATCH = 32  # config.yaml's max_batch_size
INT8_COSINE = 0.98  # convert's bound for the int8 variant (mean cosine over the parity rows)


def tokenize(paragraphs: Sequence[str]) -> list[list[int]]:
    """Token ids with [CLS] and [SEP], truncated at MAX_TOKENS, as sentence-transformers does."""
    tokenizer = sentence_embedder.sentence_model().tokenizer
    encoded = tokenizer(list(paragraphs), truncation=True, max_length=sentence_embedder.MAX_TOKENS)
    return [list(map(int, ids)) for ids in encoded["input_ids"]]


def batch_of(ids: Sequence[Sequence[int]], length: int) -> dict[str, np.ndarray]:
    """Requests stacked into one [n, length] INT64 batch."""
    rows = [texts.shaped(x, length) for x in ids]
    return {k: np.asarray([r[k][0] for r in rows], dtype=np.int64) for k in rows[0]}


def convert_models(repo: Path, ids: Sequence[Sequence[int]], measure: bool) -> dict[str, Any]:
    """``mserve convert`` of the module ``sentence_embedder:build`` makes, traced with integer
    token ids, checked on the parity rows given, with its int8-dynamic variant (``measure``: time
    them at batch 1 and 32); the conversion report."""
    longest = max(map(len, ids))
    parity = batch_of(ids, longest)
    np.savez(repo.parent / "parity.npz", **parity)
    here = str(Path(__file__).resolve().parent)  # the factory's module, for the child process
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    args = ["convert", "sentence_embedder:build", "--out", repo / MODEL]
    args += [f"--input-shape={name}=2,{longest}:int64" for name in parity]
    args += ["--sequence-axis", "1", "--output-names", "sentence_embedding"]
    args += ["--variants", "int8-dynamic", "--tolerance", f"cosine={INT8_COSINE}"]
    args += ["--max-batch-size", str(MAX_BATCH), "--inputs", repo.parent / "parity.npz"]
    args += [] if measure else ["--no-measure"]
    report: dict[str, Any] = json.loads(scenario.mserve_cli([*args, "--json"], quiet=True))
    return report


def check_parity(
    repo: Path, paragraphs: Sequence[str], ids: Sequence[Sequence[int]], report: dict[str, Any]
) -> dict[str, Any]:
    """Each ONNX model on each text at its exact length against sentence-transformers' encode;
    and fp32 padded to MAX_TOKENS against fp32 exact."""
    import onnxruntime as ort

    reference = sentence_embedder.sentence_model().encode(list(paragraphs), batch_size=32)
    by_variant = {v["model"]: v for v in report["variants"]}
    out: dict[str, Any] = {"variants": [], "timed_tokens": max(map(len, ids))}
    exact_fp32 = None
    for model in (MODEL, INT8):
        session = ort.InferenceSession(str(repo / model / "1" / "model.onnx"))
        got = np.stack([session.run(None, batch_of([x], len(x)))[0][0] for x in ids])
        cos = np.sum(got * reference, axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
        )
        variant = by_variant[model]
        out["variants"].append(
            {
                "model": model,
                "texts": len(ids),
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "convert_cosine_mean": variant["parity"]["outputs"][0]["cosine_mean"],
                "convert_max_abs": variant["parity"]["outputs"][0]["max_abs"],
                "size_mb": variant["size_bytes"] / 1e6,
                "latency_ms": {str(m["batch"]): round(m["p50_ms"], 2) for m in variant["latency"]},
            }
        )
        if model == MODEL:
            exact_fp32 = got
            padded = np.concatenate(
                [
                    session.run(None, batch_of(ids[i : i + 32], sentence_embedder.MAX_TOKENS))[0]
                    for i in range(0, len(ids), 32)
                ]
            )
            out["padded_vs_exact_min_cosine"] = float(np.min(np.sum(padded * exact_fp32, axis=1)))
    return out
