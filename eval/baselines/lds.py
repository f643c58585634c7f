"""Linear dynamical system (LDS) dynamic-texture baseline.

Doretto, Chiuso, Wu, Soatto, "Dynamic Textures", IJCV 51(2):91-109, 2003. A clip is modelled
as the output of a linear Gauss-Markov model driven by white noise,

    x_{t+1} = A x_t + B v_t,   v_t ~ N(0, I_nv)                                    (M1)
    y_t     = C x_t + ybar                                                        (M2)

and identified with the paper's closed-form (sub-optimal) solution:

    Y - ybar = U S V^T  (frames as the columns of Y, D x T)                      (E1)
    C = U[:, :n],  X = S[:n, :n] V[:, :n]^T                                       (E2)
    A = X[:, 1:] pinv(X[:, :-1])                (least squares in Frobenius norm)   (E3)
    W = X[:, 1:] - A X[:, :-1],  Q = W W^T / (T - 1)                              (E4)
    B = U_w[:, :nv] S_w[:nv, :nv] / sqrt(T - 1)  (so that B B^T ~ Q)              (E5)

The SVD (E1) is taken through the T x T Gram matrix (Y - ybar)^T (Y - ybar), so nothing D x D
is ever formed. (E3)-(E5) live in :func:`identify_dynamics` and the rollout (M1) in
:func:`rollout`; the HOSVD and FFT-LDS baselines reuse both.

Where a rollout starts (``start`` in :func:`sample`):

* ``"first"`` (the *continuation*): from the state fitted to frame 1, so the first synthesized
  frames continue the observed clip;
* ``"stationary"`` (a *new sample*): from x_0 ~ N(xbar, P), the fitted model's stationary
  distribution (:func:`stationary_start`). For a stable A (spectral radius < 1) P solves the
  discrete Lyapunov equation

    P = A P A^T + B B^T                                                           (S1)

  the covariance that (M1) keeps for ever once it has it; for an unstable A, which has no
  stationary distribution, P is the empirical covariance of the fitted states. xbar is the
  temporal mean of the fitted states: 0 here (the states of mean-subtracted frames sum to 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dyntex.errors import InputError

__all__ = ["LDSModel", "START", "as_clip", "draw_start", "fit", "fit_matrix",
           "identify_dynamics", "initial_state", "max_abs_eig", "rollout", "sample",
           "stabilize_dynamics", "stationary_start", "synthesize_matrix"]

#: Where a rollout starts: the state fitted to frame 1, or a draw from the stationary law.
START = ("first", "stationary")
#: A counts as stable below spectral radius 1 - STABLE_MARGIN: on the unit circle (to rounding)
#: (S1) is singular and the stationary variance unbounded.
STABLE_MARGIN = 1e-6


def as_clip(clip: np.ndarray, name: str = "clip", min_frames: int = 1) -> np.ndarray:
    """Validate a clip and return it as float64 (T, H, W, C).

    Accepts float arrays (T, H, W, C) with C in {1, 3} or grayscale (T, H, W), values in [0, 1].
    Raises :class:`InputError` with one line otherwise.
    """
    arr = np.asarray(clip)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise InputError(f"{name}: expected an array (T,H,W) or (T,H,W,C) with C = 1 or 3, "
                         f"got shape {np.shape(clip)}")
    if min(arr.shape[:3]) < 1:
        raise InputError(f"{name}: empty clip of shape {arr.shape}")
    if arr.shape[0] < min_frames:
        raise InputError(f"{name}: needs at least {min_frames} frames, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name}: expected float values in [0,1], got dtype {arr.dtype} "
                         "(divide 8-bit frames by 255)")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(f"{name}: values must lie in [0,1], got range [{lo:.4g}, {hi:.4g}] "
                         "(divide 8-bit frames by 255)")
    return arr


def max_abs_eig(A: np.ndarray) -> float:
    """Spectral radius of a square matrix (0 for an empty one)."""
    return float(np.abs(np.linalg.eigvals(A)).max()) if A.size else 0.0


def stabilize_dynamics(A: np.ndarray) -> np.ndarray:
    """Reflect eigenvalues of ``A`` outside the unit circle into it: lambda -> lambda / |lambda|^2.

    Eigenvectors are kept, so the modes keep their frequency (arg lambda) and only their growth
    turns into decay with the reciprocal rate. Conjugate pairs map to conjugate pairs, so the
    result is real up to rounding, which is discarded.
    """
    lam, P = np.linalg.eig(A)
    big = np.abs(lam) > 1.0
    if not big.any():
        return A
    lam[big] /= np.abs(lam[big]) ** 2
    return np.real(P @ np.diag(lam) @ np.linalg.inv(P))


def identify_dynamics(X: np.ndarray, nv: int, stabilize: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares state transition and noise input of a state path ``X`` (n x T).

    Returns ``(A, B)`` with A (n x n) from (E3) and B (n x nv) from (E4)-(E5). If the residual has
    fewer than ``nv`` non-trivial directions the remaining columns of B are zero. ``stabilize``
    reflects unstable eigenvalues of A (see :func:`stabilize_dynamics`); B stays that of the
    faithful fit.
    """
    n, T = X.shape
    if T < 2:
        raise InputError(f"need at least 2 states to identify dynamics, got {T}")
    if nv < 0:
        raise InputError(f"nv must be >= 0, got {nv}")
    X0, X1 = X[:, :-1], X[:, 1:]
    A = X1 @ np.linalg.pinv(X0)                                   # (E3)
    W = X1 - A @ X0                                               # (E4)
    Uw, Sw, _ = np.linalg.svd(W, full_matrices=False)
    k = min(nv, Sw.size)
    B = np.zeros((n, nv))
    B[:, :k] = Uw[:, :k] * (Sw[:k] / np.sqrt(T - 1))              # (E5)
    if stabilize:
        A = stabilize_dynamics(A)
    return A, B


def rollout(A: np.ndarray, B: np.ndarray, x0: np.ndarray, T: int,
            rng: np.random.Generator | None, noise: bool = True) -> np.ndarray:
    """States x_0..x_{T-1} of (M1) from ``x0``; returns (T, n).

    With ``noise=False`` the rollout is deterministic (v_t = 0) and ``rng`` is not used.
    """
    if T < 1:
        raise InputError(f"number of frames to synthesize must be >= 1, got {T}")
    if noise and rng is None:
        raise InputError("a numpy Generator is needed for a noise-driven rollout")
    V = rng.standard_normal((T - 1, B.shape[1])) @ B.T if noise else np.zeros((T - 1, A.shape[0]))
    out = np.empty((T, A.shape[0]))
    out[0] = x0
    for t in range(T - 1):
        out[t + 1] = A @ out[t] + V[t]
    return out


def stationary_start(A: np.ndarray, B: np.ndarray, states: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean, covariance and rule of the new-sample start for dynamics (A, B) fit to ``states``.

    ``states`` is the fitted path (n x T). The mean is its temporal mean. The covariance is the
    solution of (S1) when A is stable, i.e. its spectral radius is below 1 - STABLE_MARGIN
    (rule ``"lyapunov"``; scipy's ``solve_discrete_lyapunov``), else the empirical covariance of
    the states about their mean, normalised by T - 1 (rule ``"empirical"``). Symmetrised
    against rounding.
    """
    mean = states.mean(axis=1)
    if A.size and max_abs_eig(A) < 1.0 - STABLE_MARGIN:
        from scipy.linalg import solve_discrete_lyapunov

        P, rule = solve_discrete_lyapunov(A, B @ B.T), "lyapunov"
    else:
        dev = states - mean[:, None]
        P, rule = dev @ dev.T / max(states.shape[1] - 1, 1), "empirical"
    return mean, 0.5 * (P + P.T), rule


def draw_start(mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """One draw of N(mean, cov) from ``rng`` (cov symmetric PSD; rounding negatives count as 0)."""
    if rng is None:
        raise InputError("a numpy Generator is needed to draw a new-sample start")
    lam, V = np.linalg.eigh(cov)
    return mean + V @ (np.sqrt(np.maximum(lam, 0.0)) * rng.standard_normal(mean.shape[0]))


def initial_state(first: np.ndarray, start_law: tuple[np.ndarray, np.ndarray, str], start: str,
                  rng: np.random.Generator | None) -> np.ndarray:
    """The rollout's x_0: ``first`` for ``start="first"``, a draw of ``start_law`` (the
    (mean, covariance, rule) of :func:`stationary_start`) for ``start="stationary"``."""
    if start == "first":
        return first
    if start == "stationary":
        return draw_start(start_law[0], start_law[1], rng)
    raise InputError(f"start must be one of {', '.join(START)}, got {start!r}")


@dataclass
class LDSModel:
    """An identified LDS (M1)-(M2).

    ``C`` (D x n) maps states to mean-subtracted observations (flattened frames or features),
    ``mean`` is ybar (D,), ``x0`` the first fitted state, ``start_law`` the (mean, covariance,
    rule) of the new-sample start (:func:`stationary_start`) and ``shape`` the shape of the
    fitted clip (T, H, W[, C]); synthesized clips keep its frame layout.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    mean: np.ndarray
    x0: np.ndarray
    start_law: tuple[np.ndarray, np.ndarray, str]
    shape: tuple[int, ...]

    @property
    def max_abs_eig(self) -> float:
        """Spectral radius of A (> 1: the noise-free rollout diverges)."""
        return max_abs_eig(self.A)


def fit_matrix(Y: np.ndarray, n: int | None = None, nv: int | None = None,
               stabilize: bool = False, shape: tuple[int, ...] | None = None) -> LDSModel:
    """Identify an LDS from observations ``Y`` given as rows (T x D), by (E1)-(E5).

    Defaults: n = min(50, T // 2), nv = min(30, n). ``n`` may exceed T/2 but not T; components
    with a vanishing singular value (a clip of rank < n) get a zero column in C and a zero state.
    """
    T, D = Y.shape
    if T < 2:
        raise InputError(f"an LDS needs at least 2 frames, got {T}")
    n = min(50, T // 2) if n is None else int(n)
    nv = min(30, n) if nv is None else int(nv)
    if not 1 <= n <= min(T, D):
        raise InputError(f"state dimension n must be in [1, {min(T, D)}] for {T} frames "
                         f"of {D} values, got {n}")
    if not 0 <= nv <= n:
        raise InputError(f"noise dimension nv must be in [0, n={n}], got {nv}")
    mean = Y.mean(axis=0)
    Yc = Y - mean
    # (E1) via the T x T Gram matrix: Yc Yc^T = V S^2 V^T (Yc is the transpose of the paper's Y).
    lam, V = np.linalg.eigh(Yc @ Yc.T)
    order = np.argsort(lam)[::-1][:n]
    lam, V = lam[order], V[:, order]
    # Gram eigenvalues carry an absolute error ~ eps * lam_max, so components below 1e-12 of the
    # largest (singular value below 1e-6 of the largest) are numerically null: zero them.
    keep = lam > lam[0] * 1e-12
    s = np.sqrt(np.where(keep, lam, 0.0))
    inv_s = np.divide(1.0, s, out=np.zeros_like(s), where=keep)
    C = Yc.T @ (V * inv_s)                                        # (E2): U = Y V S^-1
    X = (V * s).T                                                 # (E2): X = S V^T (n x T)
    A, B = identify_dynamics(X, nv, stabilize)
    return LDSModel(A=A, B=B, C=C, mean=mean, x0=X[:, 0].copy(),
                    start_law=stationary_start(A, B, X),
                    shape=tuple(shape) if shape is not None else (T, D))


def synthesize_matrix(model: LDSModel, T: int, rng: np.random.Generator | None,
                      noise: bool = True, start: str = "first") -> np.ndarray:
    """Observations (T x D) of a rollout (M1) mapped through (M2), unclipped; from ``model.x0``
    (``start="first"``) or a draw of the stationary start (``"stationary"``, drawn from ``rng``
    before the noise)."""
    x0 = initial_state(model.x0, model.start_law, start, rng)
    return rollout(model.A, model.B, x0, T, rng, noise) @ model.C.T + model.mean


def fit(clip: np.ndarray, n: int | None = None, nv: int | None = None,
        stabilize: bool = False) -> LDSModel:
    """Fit an LDS to a clip (T, H, W[, C]) in [0, 1]; each frame (all channels) is one column of Y.

    Defaults n = min(50, T // 2), nv = min(30, n). ``stabilize=True`` reflects eigenvalues of A
    with |lambda| > 1 into the unit disk; the default keeps the faithful least-squares fit.
    """
    arr = as_clip(clip, min_frames=2)
    return fit_matrix(arr.reshape(arr.shape[0], -1), n, nv, stabilize,
                      shape=np.shape(clip))


def sample(model: LDSModel, T: int, rng: np.random.Generator | None,
           noise: bool = True, start: str = "first") -> np.ndarray:
    """Synthesize T frames, clipped to [0, 1], from the first fitted state (``start="first"``,
    a continuation) or a draw of the stationary distribution (``"stationary"``, a new sample).

    ``noise=False`` gives the deterministic rollout x_{t+1} = A x_t (from the first state: the
    "reconstruction"). The result has the fitted clip's frame layout: (T, H, W) or (T, H, W, C).
    """
    Y = synthesize_matrix(model, T, rng, noise, start)
    return np.clip(Y, 0.0, 1.0).reshape((T, *model.shape[1:]))
