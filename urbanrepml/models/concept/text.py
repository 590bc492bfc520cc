"""Text prototypes of concepts: names expanded with templates, encoded by one interface.

Each concept name (``_`` read as a space) is put into every template of :data:`STREET_TEMPLATES` and
:data:`AREA_TEMPLATES`; a concept's prototype is the L2-normalised mean of its sentences' embeddings
(its ``note``, when given, is one more sentence). Encoders (:func:`get_text_encoder`):

- ``builtin``: TF-IDF over character 2-4-grams of every sentence of every concept (names, templates and
  notes), reduced with a truncated SVD to ``dim`` components - offline, deterministic, no weights.
- ``clip``: a CLIP text model from a local folder saved with ``save_pretrained`` (``config.json``,
  weights and tokenizer files; model type ``clip`` or ``clip_text_model``), through ``transformers``
  (the ``dev``/``hf`` extra); its projected ``text_embeds``.

Shapes: ``encode(texts) -> (len(texts), dim)`` float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from urbanrepml.errors import UrbanReprError

STREET_TEMPLATES = ("A street view showing {}", "A photo of {}", "A street-level photo with {}")
AREA_TEMPLATES = ("A {} area", "An aerial image of {}", "A landscape of {}")
TEMPLATES = STREET_TEMPLATES + AREA_TEMPLATES
TEXT_ENCODERS = ("builtin", "clip")


def readable(name: str) -> str:
    """``open_water`` -> ``open water``."""
    return str(name).replace("_", " ").replace("-", " ").strip()


def concept_sentences(name: str, note: str | None = None) -> list[str]:
    """The sentences of one concept: every template filled with its name, plus its note."""
    out = [t.format(readable(name)) for t in TEMPLATES]
    if note and str(note).strip() and str(note).lower() != "nan":
        out.append(str(note).strip())
    return out


class BuiltinTextEncoder:
    """TF-IDF (character 2-4-grams) + truncated SVD fitted on the given corpus (see the module docstring)."""

    name = "builtin"

    def __init__(self, corpus: list[str], dim: int = 64, seed: int = 0):
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        x = self.vectorizer.fit_transform(corpus)
        k = max(1, min(dim, x.shape[0] - 1, x.shape[1] - 1))
        self.svd = TruncatedSVD(n_components=k, random_state=seed).fit(x)
        self.dim = k

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.svd.transform(self.vectorizer.transform(texts)).astype(np.float32)


class ClipTextEncoder:
    """A CLIP text model (with its projection) from a local ``save_pretrained`` folder."""

    name = "clip"

    def __init__(self, folder: str | Path):
        folder = Path(folder).expanduser()
        config = folder / "config.json"
        if not config.is_file():
            raise UrbanReprError(f"text encoder clip: {folder} has no config.json; save a CLIP model there with "
                                 "save_pretrained (model and tokenizer)")
        kind = json.loads(config.read_text()).get("model_type")
        if kind not in ("clip", "clip_text_model"):
            raise UrbanReprError(f"text encoder clip: {folder} holds a {kind!r} model, not a CLIP model")
        try:
            import torch
            from transformers import AutoTokenizer, CLIPTextModelWithProjection
        except ImportError:
            raise UrbanReprError("text encoder clip needs transformers (pip install 'urbanrepml[hf]')") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = CLIPTextModelWithProjection.from_pretrained(str(folder), local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            raise UrbanReprError(f"text encoder clip: cannot load {folder} ({str(exc).splitlines()[0][:160]})") from None
        self._torch = torch
        self.dim = int(self.model.config.projection_dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        max_len = int(getattr(self.model.config, "max_position_embeddings", 77))
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            out = self.model(**batch).text_embeds
        return out.float().numpy()


def get_text_encoder(name: str, corpus: list[str], *, folder: str | None = None, dim: int = 64, seed: int = 0):
    """The text encoder ``name`` (``builtin`` fitted on ``corpus``; ``clip`` from ``folder``)."""
    if name == "builtin":
        return BuiltinTextEncoder(corpus, dim=dim, seed=seed)
    if name == "clip":
        if not folder:
            raise UrbanReprError("text encoder clip needs text_model: a local folder saved with save_pretrained")
        return ClipTextEncoder(folder)
    raise UrbanReprError(f"unknown text encoder {name!r}; choose one of {', '.join(TEXT_ENCODERS)}")


def concept_prototypes(names: list[str], notes: dict[str, str] | None = None, *, encoder: str = "builtin",
                       folder: str | None = None, dim: int = 64, seed: int = 0,
                       extra_corpus: list[str] | None = None) -> np.ndarray:
    """(len(names), dim) L2-normalised prototypes: the mean embedding of each concept's sentences.

    ``extra_corpus`` (e.g. the other level's sentences) joins the built-in encoder's fitting corpus.
    """
    notes = notes or {}
    sentences = [concept_sentences(n, notes.get(n)) for n in names]
    corpus = [s for group in sentences for s in group] + list(extra_corpus or [])
    enc = get_text_encoder(encoder, corpus, folder=folder, dim=dim, seed=seed)
    out = np.stack([enc.encode(group).mean(axis=0) for group in sentences])
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def hierarchy_prototypes(metas: list[str], parents: list[str], notes: dict[str, str] | None = None, *,
                         encoder: str = "builtin", folder: str | None = None, dim: int = 64,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Meta and parent prototypes from one encoder (fitted on both levels' sentences): ``(M, d)``, ``(P, d)``."""
    notes = notes or {}
    groups = [concept_sentences(n, notes.get(n)) for n in [*metas, *parents]]
    corpus = [s for g in groups for s in g]
    enc = get_text_encoder(encoder, corpus, folder=folder, dim=dim, seed=seed)
    out = np.stack([enc.encode(g).mean(axis=0) for g in groups])
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    out = (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)
    return out[:len(metas)], out[len(metas):]
