"""The trainable parts of concept geolocation on top of the (partly trainable) image encoder.

Shapes (B images, D_img pooled/token width, D concept width, M metas, P parents, K geocells, T patches):

- :class:`Projection`: (B, D_in) -> (B, D), L2-normalised (stage 0's image and GPS adapters).
- :class:`ConceptBottleneck`: pooled (B, D_img) -> concept embedding (B, D) (MLP with dropout; stage 1).
- :class:`PrototypeClassifier`: concept embedding (B, D) -> logits (B, K) by cosine similarity to
  prototypes ``normalise(proj(base + residual))`` times a clamped learnable scale, plus a per-class bias.
- :class:`ConceptGeoHead`: concept embedding (B, D) + patch tokens (B, T, D_img) -> geocell logits (B, K),
  offsets (B, 3) and attention (B, T) (stage 2). ``mode`` is the ablation: ``both`` (the concept embedding
  queries the patches; the answer, the concept embedding and the mean patch feed the heads, so ``both``
  sees everything ``image_only`` sees), ``concept_only`` (the concept embedding alone), ``image_only``
  (the mean patch queries the patches; the answer and the mean patch feed the heads; no concept input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError

MODES = ("both", "concept_only", "image_only")
MAX_LOGIT_SCALE = 100.0


class Projection(nn.Module):
    """Linear (or one hidden layer) projection to ``out_dim``, L2-normalised output."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0):
        super().__init__()
        self.net = (nn.Linear(in_dim, out_dim) if hidden <= 0 else
                    nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


class ConceptBottleneck(nn.Module):
    """MLP with dropout: pooled image features -> the concept embedding (not normalised)."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PrototypeClassifier(nn.Module):
    """Cosine classifier against text-anchored prototypes with learnable residuals (see the module docstring).

    Args:
        base: (K, D) fixed prototypes (text embeddings already in the concept space).
        init_scale: initial logit scale (``exp`` of a learnable log, clamped to ``MAX_LOGIT_SCALE``).
    """

    def __init__(self, base: Tensor, init_scale: float = 10.0):
        super().__init__()
        k, d = base.shape
        self.register_buffer("base", base.float().clone())
        self.residual = nn.Parameter(torch.zeros(k, d))
        self.proj = nn.Linear(d, d)
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.bias = nn.Parameter(torch.zeros(k))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def prototypes(self) -> Tensor:
        return F.normalize(self.proj(self.base + self.residual), dim=-1)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.normalize(z, dim=-1) @ self.prototypes().T + self.bias


class ConceptGeoHead(nn.Module):
    """Cross-attention from the concept embedding to the patch tokens, then geocell and offset heads.

    Args:
        concept_dim: width of the concept embedding (D).
        token_dim: width of the patch tokens (D_img).
        n_cells: geocells (K).
        heads: attention heads (``concept_dim`` must divide by it).
        mode: ablation (``both``, ``concept_only``, ``image_only``).
        gate: mix the attended patches into the query with a learned sigmoid gate.
        dropout: dropout of the FFN.
    """

    def __init__(self, concept_dim: int, token_dim: int, n_cells: int, *, heads: int = 4, mode: str = "both",
                 gate: bool = True, dropout: float = 0.1):
        super().__init__()
        if mode not in MODES:
            raise UrbanReprError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if concept_dim % heads:
            raise UrbanReprError(f"concept_dim {concept_dim} must be a multiple of attention_heads {heads}")
        self.mode, self.use_gate = mode, bool(gate)
        d = concept_dim
        self.patch_proj = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, d))
        self.query_norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        self.norm2 = nn.LayerNorm(d)
        self.gate = nn.Linear(2 * d, d) if gate else None
        self.cell_head = nn.Linear(d, n_cells)
        self.offset_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 3))

    def forward(self, concept: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(concept (B, D), tokens (B, T, D_img))`` -> ``(cell logits (B, K), offsets (B, 3), attention (B, T))``."""
        b, t = tokens.shape[0], tokens.shape[1]
        if self.mode == "concept_only":
            h = self.norm2(concept)
            return self.cell_head(h), self.offset_head(h), torch.full((b, t), 1.0 / t, device=tokens.device)
        patches = self.patch_proj(tokens)
        image = patches.mean(dim=1)
        query = self.query_norm(concept if self.mode == "both" else image)
        attended, weights = self.attn(query[:, None, :], patches, patches, need_weights=True, average_attn_weights=True)
        attended = attended[:, 0]
        if self.gate is not None:
            g = torch.sigmoid(self.gate(torch.cat([query, attended], dim=-1)))
            attended = g * attended
        base = query + self.query_norm(image) if self.mode == "both" else query
        h = self.norm1(base + attended)
        h = self.norm2(h + self.ffn(h))
        return self.cell_head(h), self.offset_head(h), weights[:, 0]
