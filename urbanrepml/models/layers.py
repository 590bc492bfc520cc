"""Small graph layers for the fusion U-Nets (tensors in, tensors out; no I/O).

In the style of PyTorch Geometric: every layer is an ``nn.Module`` whose
``forward`` takes node features and a graph operator, nothing else. Instead of
PyG's gather/scatter message passing (which materialises an ``E x D`` message
tensor per layer), the graph is a precomputed sparse CSR operator and
propagation is one sparse-dense matmul, with a hand-written backward that uses
the operator's transpose (precomputed once), so no per-layer edge-sized
tensors are ever stored.

Operators (see :func:`gcn_operator`, :func:`mean_pool_operator`):

- ``GraphOp``: ``A_hat = D^-1/2 (A + I) D^-1/2`` of one resolution's 1-ring
  graph (symmetric, so its transpose is itself).
- ``PoolOp``: children -> parents mean pooling, ``P[p, c] = 1/|children(p)|``;
  its transpose (kept alongside) is the backward.
- Broadcast parents -> children is a plain gather ``x_parent[parent_index]``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


@dataclass
class SparseOp:
    """A sparse CSR matrix and its transpose (``None`` when symmetric)."""

    mat: Tensor
    mat_t: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mat.shape)  # type: ignore[return-value]

    def to(self, device) -> SparseOp:
        return SparseOp(self.mat.to(device), None if self.mat_t is None else self.mat_t.to(device))

    def __matmul__(self, x: Tensor) -> Tensor:
        return _SpMM.apply(x, self.mat, self.mat if self.mat_t is None else self.mat_t)


class _SpMM(torch.autograd.Function):
    """``y = M @ x`` with ``dL/dx = M^T @ dL/dy`` from a precomputed ``M^T`` (no sparse transpose per step)."""

    @staticmethod
    def forward(ctx, x: Tensor, mat: Tensor, mat_t: Tensor) -> Tensor:  # type: ignore[override]
        ctx.mat_t = mat_t
        return mat @ x

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return ctx.mat_t @ grad.contiguous(), None, None


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> Tensor:
    """CSR tensor from COO triplets (duplicates must not occur)."""
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    crow = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=crow[1:])
    return torch.sparse_csr_tensor(
        torch.from_numpy(crow), torch.from_numpy(cols.astype(np.int64)), torch.from_numpy(vals.astype(np.float32)),
        size=shape, check_invariants=False,
    )


def gcn_operator(edge_index: np.ndarray | Tensor, num_nodes: int) -> SparseOp:
    """``D^-1/2 (A + I) D^-1/2`` of an undirected graph given as a (2, E) edge index with both directions."""
    ei = edge_index.cpu().numpy() if isinstance(edge_index, Tensor) else np.asarray(edge_index)
    loops = np.arange(num_nodes, dtype=np.int64)
    rows = np.concatenate([ei[0].astype(np.int64), loops])
    cols = np.concatenate([ei[1].astype(np.int64), loops])
    deg = np.bincount(rows, minlength=num_nodes).astype(np.float64)
    inv_sqrt = 1.0 / np.sqrt(deg)
    vals = inv_sqrt[rows] * inv_sqrt[cols]
    return SparseOp(_csr(rows, cols, vals, (num_nodes, num_nodes)))


def mean_pool_operator(parent_index: np.ndarray | Tensor, num_parents: int) -> SparseOp:
    """Children -> parents mean: ``P[p, c] = 1/|children(p)|`` for ``parent_index[c] == p``.

    Parents without children get a zero row (their pooled value is 0).
    """
    parent = parent_index.cpu().numpy() if isinstance(parent_index, Tensor) else np.asarray(parent_index, dtype=np.int64)
    children = np.arange(len(parent), dtype=np.int64)
    counts = np.bincount(parent, minlength=num_parents).astype(np.float64)
    vals = 1.0 / counts[parent]
    shape = (num_parents, len(parent))
    return SparseOp(_csr(parent, children, vals, shape), _csr(children, parent, vals, (shape[1], shape[0])))


def mean_pool(x: Tensor, pool: SparseOp) -> Tensor:
    """Mean of each parent's children's rows (``pool`` from :func:`mean_pool_operator`)."""
    return pool @ x


def broadcast(x_parent: Tensor, parent_index: Tensor) -> Tensor:
    """Each child gets its parent's row."""
    return x_parent.index_select(0, parent_index)


class GCNConv(nn.Module):
    """Graph convolution ``A_hat X W + b`` (Kipf & Welling), lean sparse version.

    ``forward(x, graph)`` with ``graph`` a :class:`SparseOp` from :func:`gcn_operator`.
    Multiplies by ``W`` first when that shrinks the features, so propagation always
    runs on the narrower side.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def forward(self, x: Tensor, graph: SparseOp) -> Tensor:
        if self.lin.out_features <= self.lin.in_features:
            out = graph @ self.lin(x)
        else:
            out = self.lin(graph @ x)
        return out if self.bias is None else out + self.bias


class GCNBlock(nn.Module):
    """``n`` pre-norm residual GCN layers: ``h = h + dropout(gelu(conv(norm(h))))``.

    Input and output width ``dim``; ``forward(x, graph)``.

    When gradients are needed the whole block runs as one autograd function
    (:class:`_GCNBlockFn`) that keeps only each layer's pre-activation (and
    dropout mask) plus the block's output: a layer's input is recovered in the
    backward pass by undoing the residual update (``x_l = x_{l+1} - g_l``, as in
    reversible networks), and the layer norm is recomputed from it. That is one
    ``N x dim`` tensor per layer instead of about three with plain autograd.
    ``fused=False`` runs the plain module graph (same parameters, same result up
    to float rounding).
    """

    def __init__(self, dim: int, n_layers: int, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_layers))
        self.convs = nn.ModuleList(GCNConv(dim, dim) for _ in range(n_layers))
        self.p = float(dropout)
        self.fused = fused

    def forward(self, x: Tensor, graph: SparseOp) -> Tensor:
        if not self.convs:
            return x
        p = self.p if self.training else 0.0
        if self.fused and torch.is_grad_enabled():
            params = []
            for norm, conv in zip(self.norms, self.convs, strict=False):
                params += [norm.weight, norm.bias, conv.lin.weight, conv.bias]
            mat_t = graph.mat if graph.mat_t is None else graph.mat_t
            return _GCNBlockFn.apply(x, graph.mat, mat_t, p, *params)
        for norm, conv in zip(self.norms, self.convs, strict=False):
            x = x + nn.functional.dropout(nn.functional.gelu(conv(norm(x), graph)), p, self.training)
        return x


class _GCNBlockFn(torch.autograd.Function):
    """Forward/backward of :class:`GCNBlock` with reversible residuals (see its docstring)."""

    @staticmethod
    def forward(ctx, x, mat, mat_t, p, *params):  # type: ignore[override]
        # The kept tensors (pre-activations, dropout masks) live in one buffer each, allocated up
        # front: kept tensors allocated one by one between same-sized transients fragment glibc's
        # heap, which then holds its peak up to twice over (see urbanrepml.training.memory).
        L = len(params) // 4
        scale = 1.0 / (1.0 - p) if p > 0 else 1.0
        hs = x.new_empty((L, *x.shape))
        masks = torch.empty((L, *x.shape), dtype=torch.bool, device=x.device) if p > 0 else None
        for layer in range(L):
            gamma, beta, weight, bias = params[4 * layer:4 * layer + 4]
            n = nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta, 1e-5)
            h = torch.add(mat @ (n @ weight.t()), bias, out=hs[layer])
            del n
            g = nn.functional.gelu(h)
            if masks is not None:
                g = g * masks[layer].bernoulli_(1.0 - p) * scale
            x = x + g
        ctx.save_for_backward(x, hs, *(() if masks is None else (masks,)), *params)
        ctx.mat_t, ctx.p, ctx.n_layers = mat_t, p, L
        return x

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        saved = ctx.saved_tensors
        L, p = ctx.n_layers, ctx.p
        hs = saved[1]
        masks = saved[2] if p > 0 else [None] * L
        params = saved[(3 if p > 0 else 2):]
        scale = 1.0 / (1.0 - p) if p > 0 else 1.0
        # parameter gradients are written into tensors allocated before the walk, for the same reason
        grads = [torch.empty_like(t) for t in params]
        x = saved[0].clone()  # walked back layer by layer, in place
        gy = gy.contiguous().clone()
        dim = (x.shape[-1],)
        for layer in range(L - 1, -1, -1):
            gamma, beta, weight, bias = params[4 * layer:4 * layer + 4]
            h, mask = hs[layer], masks[layer]
            g = nn.functional.gelu(h)
            if mask is None:
                dg = gy
            else:
                g.mul_(mask).mul_(scale)
                dg = gy * mask * scale
            x.sub_(g)  # the layer's input, recovered
            del g
            gh = torch.ops.aten.gelu_backward(dg, h)
            del dg
            torch.sum(gh, 0, out=grads[4 * layer + 3])
            gu = ctx.mat_t @ gh
            del gh
            n, mean, rstd = torch.native_layer_norm(x, dim, gamma, beta, 1e-5)
            torch.mm(gu.t(), n, out=grads[4 * layer + 2])
            del n
            gn = gu @ weight
            del gu
            gx, ggamma, gbeta = torch.ops.aten.native_layer_norm_backward(gn, x, dim, mean, rstd, gamma, beta, [True, True, True])
            gy.add_(gx)
            grads[4 * layer].copy_(ggamma)
            grads[4 * layer + 1].copy_(gbeta)
            del gx, ggamma, gbeta, mean, rstd
        return (gy, None, None, None, *grads)
