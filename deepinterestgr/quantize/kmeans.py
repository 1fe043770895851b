"""k-means in torch: k-means++ / random init, Lloyd iterations, balanced (capacity-limited) assignment, and the
Sinkhorn assignment LC-Rec uses on the last RQ-VAE level.

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


def init_centroids(x: torch.Tensor, k: int, *, init: Init = "kmeans++",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """k initial centroids from the rows of x. With fewer distinct rows than k, rows repeat (dead codes are
    restarted later)."""
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
    log_r, log_c = (torch.full((n,), -torch.log(torch.tensor(float(n), dtype=d.dtype))),
                    torch.full((k,), -torch.log(torch.tensor(float(k), dtype=d.dtype))))
    u, v = torch.zeros(n, dtype=d.dtype), torch.zeros(k, dtype=d.dtype)
    for _ in range(iters):
        u = log_r - torch.logsumexp(log_p + v[None], dim=1)
        v = log_c - torch.logsumexp(log_p + u[:, None], dim=0)
    return (log_p + u[:, None] + v[None]).argmax(dim=1)


def capacity_assign(dist: torch.Tensor, *, capacity: int) -> torch.Tensor:
    """Assignment [N] from distances [N, K] where no code takes more than `capacity` items (needs N <= K * capacity).

    Greedy rounds: every unassigned item proposes its nearest code that still has room; each code keeps its closest
    proposers up to its remaining room. Exact and deterministic, unlike the argmax of a Sinkhorn plan, which sends
    near-duplicate rows (common in catalogs: one product in ten colours) to the same code together.
    """
    n, k = dist.shape
    if n > k * capacity:
        raise ValueError(f"capacity {capacity} x {k} codes cannot hold {n} items")
    assignment = torch.full((n,), -1, dtype=torch.long)
    room = torch.full((k,), capacity, dtype=torch.long)
    dist = dist.float().cpu()
    while (unassigned := (assignment < 0).nonzero().squeeze(1)).numel():
        masked = dist[unassigned].masked_fill((room == 0)[None], float("inf"))
        cost, choice = masked.min(dim=1)
        # rank the proposers of each code by distance: sort by cost, then stably by code
        order = torch.argsort(cost, stable=True)
        order = order[torch.argsort(choice[order], stable=True)]
        chosen = choice[order]
        first = torch.searchsorted(chosen, chosen, side="left")
        rank = torch.arange(len(order)) - first
        accept = rank < room[chosen]
        assignment[unassigned[order[accept]]] = chosen[accept]
        room -= torch.bincount(chosen[accept], minlength=k)
    return assignment


def balanced_capacity(n: int, k: int, factor: float = 1.0) -> int:
    return max(1, int(-(-n * factor // k)))


def assign(x: torch.Tensor, centroids: torch.Tensor, *, balanced: bool = False,
           capacity_factor: float = 1.0) -> torch.Tensor:
    dist = squared_distances(x, centroids)
    if not balanced:
        return dist.argmin(dim=1)
    return capacity_assign(
        dist, capacity=balanced_capacity(x.shape[0], centroids.shape[0], capacity_factor)
    ).to(x.device)


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
           capacity_factor: float = 1.0, generator: torch.Generator | None = None) -> KMeansResult:
    """Lloyd's k-means on [N, D] float rows. `balanced`: every cluster holds at most ceil(factor * N / K) rows."""
    x = x.detach().float()
    centroids = init_centroids(x, k, init=init, generator=generator)
    assignment = assign(x, centroids, balanced=balanced, capacity_factor=capacity_factor)
    for _ in range(iters):
        centroids = update_centroids(x, assignment, centroids, generator=generator)
        new_assignment = assign(x, centroids, balanced=balanced, capacity_factor=capacity_factor)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
    return KMeansResult(centroids, assignment)


def distinct_within_groups(dist: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Nearest codes [N] from distances [N, K], except that rows of one group (same earlier-level codes) take distinct
    codes while the group has at most K rows (larger groups share codes as evenly as possible).

    The last level of residual quantization then separates items that the earlier levels could not (LC-Rec's
    "uniform semantic mapping" of colliding items), instead of leaving them to the suffix code.
    """
    assignment = dist.argmin(dim=1)
    _, inverse, counts = torch.unique(groups, dim=0, return_inverse=True, return_counts=True)
    k = dist.shape[1]
    for g in (counts > 1).nonzero().squeeze(1).tolist():
        rows = (inverse == g).nonzero().squeeze(1)
        if torch.unique(assignment[rows]).numel() == len(rows):
            continue  # already distinct
        capacity = balanced_capacity(len(rows), k)
        assignment[rows] = capacity_assign(dist[rows], capacity=capacity).to(assignment.device)
    return assignment


def residual_candidates(z: torch.Tensor, codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual quantization of z [B, D] by nearest codes through codebooks [L, K, D] up to the last level: the first
    L-1 codes [B, L-1] and the squared distances [B, K] of the remaining residual to the last level's codes."""
    residual, codes = z.float(), []
    for level in range(codebooks.shape[0] - 1):
        code = squared_distances(residual, codebooks[level].float()).argmin(dim=1)
        residual = residual - codebooks[level].float()[code]
        codes.append(code)
    prefix = torch.stack(codes, dim=1) if codes else z.new_zeros(len(z), 0, dtype=torch.long)
    return prefix, squared_distances(residual, codebooks[-1].float())
