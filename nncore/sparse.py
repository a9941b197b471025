"""The first Dense layer of a model run directly on a sparse (SciPy CSR) X.

Densifying a batch costs a pass over its rows x features and a GEMM over
all of them, zeros included; at low density the CSR kernels (csrc/sparse.c)
do only the nonzeros' work: Y = X W + b forward, dW = X^T dY backward (the
first layer needs no input gradient). The rest of the model runs as it is,
as a Sequential sharing the model's later layers. Used by the estimators
for sgd/adam training and predict when X is sparse enough
(``use_sparse_head``); results equal the densified path's to float32
rounding (the sums run over the nonzeros only, in another order).
"""
import numpy as np

from . import _core
from .layers.dense import Dense
from .layers.sequential import Sequential

__all__ = ["SPARSE_MAX_DENSITY", "SparseHead", "use_sparse_head"]

# Below this fraction of nonzeros the CSR kernels beat densify + GEMMs for a
# first layer of 256 units (benchmarks/sparse_first_layer.py; README).
SPARSE_MAX_DENSITY = 0.10


def use_sparse_head(model, X):
    """True when X (a canonical float32 CSR matrix) is sparse enough, and the
    model starts with a plain Dense (no activation of its own, float32)."""
    layers = getattr(model, "layers", ())
    if not layers or type(layers[0]) is not Dense or layers[0].activation is not None:
        return False
    n, d = X.shape
    return X.nnz < SPARSE_MAX_DENSITY * n * d


def csr_int32(X):
    """X (CSR) with int32 indptr and indices, as the kernels take them (a copy
    of those two arrays only when SciPy chose int64)."""
    if X.indptr.dtype != np.int32 or X.indices.dtype != np.int32:
        if X.nnz > np.iinfo(np.int32).max:
            raise ValueError(f"sparse X: {X.nnz} stored values do not fit int32 offsets")
        X = X.copy()
        X.indptr = X.indptr.astype(np.int32)
        X.indices = X.indices.astype(np.int32)
    return X


class SparseHead:
    """``model`` with its first layer (a Dense) computed from CSR rows.

    ``forward(X, lo, hi)``: the model's output for rows lo:hi of the CSR
    matrix X (int32 offsets, see csr_int32), in training mode; then
    ``backward(grad)`` fills every parameter gradient of the model, the
    first layer's from the same rows. ``predict(X)`` in evaluation mode."""

    def __init__(self, model):
        self.dense = model.layers[0]
        self.tail = Sequential(*model.layers[1:])
        self._z = None
        self._batch = None

    def _first(self, X, lo, hi):
        dense = self.dense
        m, h = hi - lo, dense.out_features
        if self._z is None or self._z.shape[0] < m:
            self._z = np.empty((m, h), dtype=np.float32)
        z = self._z[:m]
        indptr = X.indptr[lo:hi + 1]
        _core.csr_dense_forward(indptr, X.indices, X.data, dense.weight, dense.bias, z)
        return indptr, z

    def forward(self, X, lo, hi):
        indptr, z = self._first(X, lo, hi)
        self._batch = (indptr, X.indices, X.data)
        return self.tail.forward(z)

    def backward(self, grad):
        dense = self.dense
        dz = self.tail.backward(grad)
        indptr, indices, data = self._batch
        _core.csr_dense_weight_grad(indptr, indices, data, dz, dense.grad_weight)
        if dense.bias is not None:
            _core.bias_backward(dz, dense.grad_bias)

    def predict(self, X, batch_size=1024):
        n = X.shape[0]
        out = None
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            y = self.tail.predict(self._first(X, lo, hi)[1])
            if out is None:
                out = np.empty((n,) + y.shape[1:], dtype=np.float32)
            out[lo:hi] = y
        return out

    def forget(self):
        """Drop the references to the last batch (and the tail's to its input)."""
        self._batch = None
        self.tail._forget()
