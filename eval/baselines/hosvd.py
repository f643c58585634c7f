"""Higher-order SVD (Tucker) dynamic-texture baseline.

Costantini, Sbaiz, Süsstrunk, "Higher Order SVD Analysis for Dynamic Texture Synthesis",
IEEE Trans. Image Processing 17(1):42-52, 2008. The clip is a 4-way tensor
Y in R^{H x W x T x C} decomposed by a truncated HOSVD (Tucker decomposition)

    Y ~ S x_1 U x_2 V x_3 F x_4 W                                                 (H1)

where each factor holds the leading left singular vectors of the corresponding mode unfolding
Y_(k) and the core is S = Y x_1 U^T x_2 V^T x_3 F^T x_4 W^T. The rows of the temporal factor
F (T x r_t) form the state trajectory; as in the paper, its dynamics are modelled by the LDS of
Doretto et al. 2003,

    f_{t+1} = A f_t + B v_t                                                       (H2)

identified with the same least-squares estimator (:func:`eval.baselines.lds.identify_dynamics`).
Synthesis rolls (H2) out from the first fitted row and substitutes the new F' into (H1).
Unlike the LDS baseline the data are not mean-subtracted: the mean lives in the leading
temporal component, whose eigenvalue in A is then close to 1.

The leading singular vectors of each unfolding are the leading eigenvectors of its Gram matrix
Y_(k) Y_(k)^T, which is at most max(H, W, T, C) squared, so no large SVD is ever taken.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dyntex.errors import InputError
from eval.baselines.lds import as_clip, identify_dynamics, max_abs_eig, rollout

__all__ = ["HOSVDModel", "fit", "reconstruct", "sample"]


@dataclass
class HOSVDModel:
    """A truncated HOSVD (H1) with LDS dynamics (H2) on its temporal factor.

    ``core`` is stored with the temporal mode first, shape (r_t, r_h, r_w, r_c); ``U`` (H x r_h),
    ``V`` (W x r_w), ``W`` (C x r_c) are the spatial and colour factors, ``F`` (T x r_t) the
    fitted temporal factor whose first row is the rollout's start; ``shape`` is the shape of
    the fitted clip (T, H, W[, C]).
    """

    core: np.ndarray
    U: np.ndarray
    V: np.ndarray
    F: np.ndarray
    W: np.ndarray
    A: np.ndarray
    B: np.ndarray
    shape: tuple[int, ...]

    @property
    def max_abs_eig(self) -> float:
        """Spectral radius of A (> 1: the noise-free rollout diverges)."""
        return max_abs_eig(self.A)


def _mode_gram(Y: np.ndarray, axis: int) -> np.ndarray:
    """Gram matrix Y_(k) Y_(k)^T of the unfolding along ``axis`` (one copy, one GEMM)."""
    X = np.moveaxis(Y, axis, 0).reshape(Y.shape[axis], -1)   # copies unless axis == 0
    return X @ X.T


def _leading_eigvecs(gram: np.ndarray, r: int) -> np.ndarray:
    """The r leading eigenvectors of a symmetric PSD Gram matrix, as columns."""
    lam, vec = np.linalg.eigh(gram)
    return vec[:, np.argsort(lam)[::-1][:r]]


def fit(clip: np.ndarray, ranks: tuple[int, int, int, int] | None = None, nv: int | None = None,
        stabilize: bool = False) -> HOSVDModel:
    """Fit (H1)-(H2) to a clip (T, H, W[, C]) in [0, 1].

    ``ranks`` = (r_h, r_w, r_t, r_c), default (H, W, min(40, T // 2), C). ``nv`` is the noise
    dimension of B, default min(15, r_t). ``stabilize=True`` reflects eigenvalues of A with
    |lambda| > 1 into the unit disk.
    """
    Y = as_clip(clip, min_frames=2)
    T, H, W, C = Y.shape
    dims = (H, W, T, C)
    ranks = (H, W, min(40, T // 2), C) if ranks is None else tuple(int(r) for r in ranks)
    if len(ranks) != 4 or any(not 1 <= r <= d for r, d in zip(ranks, dims)):
        raise InputError(f"HOSVD ranks (r_h, r_w, r_t, r_c) must lie in [1, {dims}], got {ranks}")
    rh, rw, rt, rc = ranks
    nv = min(15, rt) if nv is None else int(nv)
    if not 0 <= nv <= rt:
        raise InputError(f"noise dimension nv must be in [0, r_t={rt}], got {nv}")
    # Leading left singular vectors of each mode unfolding, from its Gram matrix.
    U = _leading_eigvecs(_mode_gram(Y, 1), rh)
    V = _leading_eigvecs(_mode_gram(Y, 2), rw)
    F = _leading_eigvecs(_mode_gram(Y, 0), rt)
    Wc = _leading_eigvecs(Y.reshape(-1, C).T @ Y.reshape(-1, C), rc)
    Yt = Y.reshape(T, -1)
    # Core S = Y x_3 F^T x_1 U^T x_2 V^T x_4 W^T, the temporal (largest reduction) first.
    S = (F.T @ Yt).reshape(rt, H, W, C)
    S = np.einsum("rhwc,hi,wj,ck->rijk", S, U, V, Wc, optimize=True)
    A, B = identify_dynamics(F.T, nv, stabilize)                  # (H2) on the rows of F
    return HOSVDModel(core=S, U=U, V=V, F=F, W=Wc, A=A, B=B, shape=np.shape(clip))


def _frames(model: HOSVDModel, F: np.ndarray) -> np.ndarray:
    """(H1) with temporal factor ``F`` (T' x r_t), clipped to [0, 1], in the fitted layout."""
    P = np.einsum("rijk,hi,wj,ck->rhwc", model.core, model.U, model.V, model.W, optimize=True)
    frames = F @ P.reshape(P.shape[0], -1)
    return np.clip(frames, 0.0, 1.0).reshape((F.shape[0], *model.shape[1:]))


def reconstruct(model: HOSVDModel) -> np.ndarray:
    """The truncated HOSVD of the fitted clip itself (fitted F, no dynamics), clipped to [0, 1].

    With full ranks this reproduces the clip to floating-point precision.
    """
    return _frames(model, model.F)


def sample(model: HOSVDModel, T: int, rng: np.random.Generator | None,
           noise: bool = True) -> np.ndarray:
    """Synthesize T frames: roll (H2) out from the first row of F and apply (H1).

    ``noise=False`` gives the deterministic rollout f_{t+1} = A f_t.
    """
    return _frames(model, rollout(model.A, model.B, model.F[0], T, rng, noise))
