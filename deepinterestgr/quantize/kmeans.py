"""k-means in torch: k-means++ / random init, Lloyd iterations, and balanced (equal-size) assignment via Sinkhorn.

Shared by RQ-KMeans (whole-table fit) and RQ-VAE (codebook init on the first batch). Everything takes an explicit
`torch.Generator` so a fixed seed gives the same codebooks.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

Init = Literal["kmeans++", "random"]


class KMeansResult(NamedTuple):
    """centroids: [K, D]; assignment: [N] long in [0, K)."""

    centroids: torch.Tensor
    assignment: torch.Tensor


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[N, D] x [K, D] -> [N, K] squared Euclidean distances (clamped at 0 against cancellation)."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(1)[None]).clamp_min_(0)


def init_centroids(x: torch.Tensor, k: int, *, init: Init = "kmeans++", generator: torch.Generator | None = None) -> torch.Tensor:
    """k initial centroids from the rows of x. With fewer distinct rows than k, rows repeat (dead codes are restarted later)."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one vector")
    if init == "random" or n <= k:
        idx = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
        return x[idx].clone()
    if init != "kmeans++":
        raise ValueError(f"unknown k-means init {init!r}; use 'kmeans++' or 'random'")
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    centroids[0] = x[torch.randint(n, (1,), generator=generator)]
    closest = squared_distances(x, centroids[:1]).squeeze(1)
    for j in range(1, k):
        total = closest.sum()
        # all points coincide with chosen centroids: any row is as good as another
        probs = closest / total if total > 0 else torch.full_like(closest, 1.0 / n)
        idx = torch.multinomial(probs, 1, generator=generator)
        centroids[j] = x[idx]
        closest = torch.minimum(closest, squared_distances(x, centroids[j : j + 1]).squeeze(1))
    return centroids


def sinkhorn_assign(dist: torch.Tensor, *, epsilon: float = 0.05, iters: int = 50) -> torch.Tensor:
    """Balanced assignment [N] from distances [N, K]: argmax of an entropic transport plan with uniform code marginals.

    Distances are rescaled to [0, 1] so `epsilon` means the same for any embedding scale (LC-Rec's sk_epsilon).
    """
    d = dist.double()
    d = (d - d.min()) / (d.max() - d.min()).clamp_min(1e-12)
    log_p = -d / epsilon
    n, k = log_p.shape
    log_r, log_c = torch.full((n,), -torch.log(torch.tensor(float(n), dtype=d.dtype))), torch.full((k,), -torch.log(torch.tensor(float(k), dtype=d.dtype)))
    u, v = torch.zeros(n, dtype=d.dtype), torch.zeros(k, dtype=d.dtype)
    for _ in range(iters):
        u = log_r - torch.logsumexp(log_p + v[None], dim=1)
        v = log_c - torch.logsumexp(log_p + u[:, None], dim=0)
    return (log_p + u[:, None] + v[None]).argmax(dim=1)


def assign(x: torch.Tensor, centroids: torch.Tensor, *, balanced: bool = False, epsilon: float = 0.05) -> torch.Tensor:
    dist = squared_distances(x, centroids)
    return sinkhorn_assign(dist, epsilon=epsilon) if balanced else dist.argmin(dim=1)


def update_centroids(x: torch.Tensor, assignment: torch.Tensor, centroids: torch.Tensor, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Means of the assigned rows; an empty cluster restarts at a random row (keeps every code alive)."""
    k = centroids.shape[0]
    sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
    counts = torch.bincount(assignment, minlength=k).to(x.dtype)
    new = sums / counts.clamp_min(1)[:, None]
    empty = counts == 0
    if empty.any():
        new[empty] = x[torch.randint(x.shape[0], (int(empty.sum()),), generator=generator)]
    return new


def kmeans(x: torch.Tensor, k: int, *, iters: int = 20, init: Init = "kmeans++", balanced: bool = False,
           epsilon: float = 0.05, generator: torch.Generator | None = None) -> KMeansResult:
    """Lloyd's k-means on [N, D] float rows. `balanced` uses equal-size Sinkhorn assignment in every iteration."""
    x = x.detach().float()
    centroids = init_centroids(x, k, init=init, generator=generator)
    assignment = assign(x, centroids, balanced=balanced, epsilon=epsilon)
    for _ in range(iters):
        centroids = update_centroids(x, assignment, centroids, generator=generator)
        new_assignment = assign(x, centroids, balanced=balanced, epsilon=epsilon)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
    return KMeansResult(centroids, assignment)
