"""The vector quantiser of the VQ-GAN (:mod:`medlsdm.models.vqgan`): an EMA codebook with
restarts of dead codes, and the codebook's usage and perplexity."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import DataError


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizerEMA(nn.Module):
    """Vector quantiser with an exponential-moving-average codebook and dead-code restart.

    The codebook is not trained by gradients: in training mode every forward pass moves each
    code towards the mean of the latent vectors assigned to it (EMA with ``decay``), as in
    VQ-VAE-2. A code that no vector has chosen for ``restart_after`` consecutive training
    passes is "dead" and is re-initialised with a random latent vector of the current batch
    (drawn with the torch random generator, so a seeded run is reproducible); this is what
    keeps the codebook from collapsing onto a handful of codes. Before the first training
    pass the codebook is filled with random latent vectors of the first batch.

    Under ``torch.distributed`` the EMA statistics are summed over the processes and restart
    vectors are broadcast from rank 0, so every process keeps the same codebook.

    Args:
        num_embeddings: number of codes ``K``.
        embedding_dim: length of each code (latent channels).
        decay: EMA decay of the code counts and sums.
        commitment_cost: weight β of the commitment loss ``β · ‖z − sg(zq)‖²``.
        epsilon: Laplace smoothing of the code counts.
        restart_after: training passes without use after which a code is restarted
            (``0`` turns restarting off).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        decay: float = 0.99,
        commitment_cost: float = 0.25,
        epsilon: float = 1e-5,
        restart_after: int = 20,
    ):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.decay = decay
        self.commitment_cost = commitment_cost
        self.epsilon = epsilon
        self.restart_after = restart_after
        codebook = torch.randn(num_embeddings, embedding_dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("unused_steps", torch.zeros(num_embeddings, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(False))

    # -- helpers -------------------------------------------------------------------------
    def _random_rows(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` random rows of ``flat`` (torch RNG; identical on every process)."""
        idx = torch.randint(0, flat.shape[0], (n,)).to(flat.device)
        rows = flat[idx].clone()
        if _distributed():
            dist.broadcast(rows, src=0)
        return rows

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        """Fill the codebook with random latent vectors of the first training batch."""
        self.codebook.copy_(self._random_rows(flat, self.num_embeddings))
        self.embed_sum.copy_(self.codebook)
        self.cluster_size.fill_(1.0)
        self.unused_steps.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step of the code counts and sums, then restart of the dead codes."""
        onehot = F.one_hot(indices, self.num_embeddings).to(flat.dtype)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))

        used = counts > 0
        self.unused_steps.add_(1).masked_fill_(used, 0)
        if self.restart_after > 0:
            dead = self.unused_steps >= self.restart_after
            n_dead = int(dead.sum())
            if n_dead:
                fresh = self._random_rows(flat, n_dead)
                self.codebook[dead] = fresh
                self.embed_sum[dead] = fresh
                self.cluster_size[dead] = 1.0
                self.unused_steps[dead] = 0

    @staticmethod
    def code_stats(indices: torch.Tensor, num_embeddings: int, sync: bool = False) -> dict[str, torch.Tensor]:
        """Usage (fraction of the ``K`` codes chosen at least once) and perplexity of ``indices``.

        Perplexity is ``exp(H(p))`` of the code frequencies ``p``: 1 when a single code is
        used, ``m`` when ``m`` codes are used equally often, ``K`` at best. With ``sync``
        the counts are summed over the ``torch.distributed`` processes.
        """
        counts = torch.bincount(indices.reshape(-1), minlength=num_embeddings).float()
        if sync and _distributed():
            counts = counts.clone()
            dist.all_reduce(counts)
        p = counts / counts.sum().clamp_min(1)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return {"perplexity": torch.exp(entropy), "usage": (counts > 0).float().mean()}

    # -- forward -------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, update: bool | None = None):
        """Quantise ``z`` of shape ``(B, embedding_dim, *spatial)``.

        Args:
            z: pre-quantisation latent.
            update: update the codebook (EMA + restart); default: ``self.training``.

        Returns:
            ``(zq, indices, stats)``: the straight-through quantised latent (same shape and
            dtype as ``z``), the code index of every latent position ``(B, *spatial)``, and
            a dict with ``commitment_loss``, ``perplexity`` and ``usage`` (0-d tensors).
        """
        if z.shape[1] != self.embedding_dim:
            raise DataError(f"latent has {z.shape[1]} channels, the codebook expects {self.embedding_dim}")
        if update is None:
            update = self.training
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            flat = zf.movedim(1, -1).reshape(-1, self.embedding_dim)
            if update and not bool(self.initialized):
                self._init_codebook(flat.detach())
            distances = (
                flat.pow(2).sum(1, keepdim=True)
                - 2 * flat @ self.codebook.t()
                + self.codebook.pow(2).sum(1).unsqueeze(0)
            )
            indices = distances.argmin(1)
            quantized = self.codebook[indices].view(*zf.movedim(1, -1).shape).movedim(-1, 1)
            commitment = self.commitment_cost * F.mse_loss(zf, quantized.detach())
            stats = self.code_stats(indices, self.num_embeddings, sync=update)
            if update:
                self._update(flat.detach(), indices)
            zq = zf + (quantized - zf).detach()
        stats["commitment_loss"] = commitment
        spatial = z.shape[:1] + z.shape[2:]
        return zq.to(z.dtype), indices.view(spatial), stats
