"""Data-parallel training on ``torch.distributed``: process groups, sharding, DDP around an ELBO.

Launch with ``torchrun --nproc_per_node N -m pyro_dvae train ...`` (or ``pyro-dvae train
--nproc N``, which runs torchrun for you). Each process:

1. joins the process group from torchrun's environment (:func:`init_distributed`; gloo on CPU,
   NCCL on CUDA, ``env://`` rendezvous: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
   ``WORLD_SIZE``, ``LOCAL_RANK``);
2. draws the same global permutation of the data (same seed) and takes its own contiguous slice
   of every global batch (:meth:`DistributedContext.shard`), so that a step sees exactly the data
   points of the one-process step with the same global batch;
3. computes its shard's negative ELBO through :class:`ELBOLoss` wrapped in
   :class:`torch.nn.parallel.DistributedDataParallel`, which all-reduces (averages) gradients
   during ``backward``. Pyro's losses are sums over the data plate, so the loss is multiplied by
   the world size before ``backward``: the averaged gradient is then the gradient of the global
   batch's loss, as in one process.

Evaluation and checkpoints happen on rank 0; scalar metrics are reduced with
:meth:`DistributedContext.all_reduce_sum`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from pyro.infer import ELBO
from torch import nn

from .errors import DVAEInputError
from .infer.torch_optim_svi import TorchOptimSVI

__all__ = [
    "DataParallelSVI",
    "DistributedContext",
    "ELBOLoss",
    "init_distributed",
    "leave_process_group",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly one-process) data-parallel run.

    Example:
        >>> ctx = DistributedContext()  # a plain single-process run
        >>> ctx.is_main, ctx.shard(torch.arange(5)).tolist()
        (True, [0, 1, 2, 3, 4])
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, which evaluates, writes checkpoints and prints."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
        if not self.is_distributed:
            return batch
        return batch.tensor_split(self.world_size)[self.rank]

    def all_reduce_sum(self, value: float) -> float:
        """The sum of ``value`` over all ranks (``value`` itself in one process)."""
        if not self.is_distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_to_all(self, part: dict) -> dict:
        """The union of every rank's ``part`` dict, on every rank (``part`` in one process)."""
        if not self.is_distributed:
            return dict(part)
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, part)
        merged: dict = {}
        for p in parts:
            merged.update(p)
        return merged

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.is_distributed:
            dist.barrier()

    def shutdown(self, wait: bool = True) -> None:
        """Leave the process group (a no-op in one process).

        With ``wait`` (after a successful run), first wait for every rank, so that no rank tears
        down its gloo/NCCL connections while another still uses them. Pass ``wait=False`` on an
        error path, where the other ranks may never arrive.
        """
        if self.is_distributed and dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()

    def _device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def init_distributed(device: str = "cpu") -> DistributedContext:
    """Join the process group that ``torchrun`` set up, or return a one-process context.

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` from the environment; with ``WORLD_SIZE``
    unset or 1 nothing is initialized. Uses the gloo backend for ``device="cpu"`` and NCCL for
    ``"cuda"`` (each process on GPU ``LOCAL_RANK``).

    Example:
        >>> init_distributed("cpu").world_size  # not under torchrun
        1
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DVAEInputError("--device cuda under torchrun, but CUDA is not available")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(rank, world_size, local_rank, backend)


class ELBOLoss(nn.Module):
    """A model/guide pair's loss (negative ELBO) as an ``nn.Module``, so DDP can wrap it.

    Like Pyro's ``ELBOModule``, but the parameters come from ``module`` (for example a
    :class:`~pyro_dvae.models.DiscreteVAE`) while ``model`` and ``guide`` can be any callables
    (such as its bound ``model``/``guide`` methods). ``forward`` returns the ELBO's
    ``differentiable_loss``; call ``backward`` on it yourself.

    Example:
        >>> from pyro_dvae import DiscreteVAE
        >>> from pyro_dvae.infer import ExactMarginalELBO
        >>> vae = DiscreteVAE(6, "2x3", encoder_hidden=(8,))
        >>> loss = ELBOLoss(vae, vae.model, vae.guide, ExactMarginalELBO())(torch.ones(4, 6))
        >>> loss.shape, loss.requires_grad
        (torch.Size([]), True)
    """

    def __init__(self, module: nn.Module, model: Callable, guide: Callable, elbo: ELBO) -> None:
        super().__init__()
        if not hasattr(elbo, "differentiable_loss"):
            raise DVAEInputError(
                f"{type(elbo).__name__} has no differentiable_loss, which data-parallel training "
                "needs; choose another estimator"
            )
        self.module = module
        self.model, self.guide, self.elbo = model, guide, elbo

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)


class DataParallelSVI(TorchOptimSVI):
    """:class:`~pyro_dvae.infer.TorchOptimSVI` whose gradients are all-reduced by DDP.

    Every call takes the *global* batch as its first argument; each rank computes the loss of its
    shard (:meth:`DistributedContext.shard`) through
    :class:`~torch.nn.parallel.DistributedDataParallel` around :class:`ELBOLoss`, scaled by the
    world size so that the all-reduced (averaged) gradient is the global batch's gradient. The
    returned loss is the global batch's loss (summed over ranks). DDP broadcasts rank 0's
    parameters when it is built, so all ranks start alike.

    :param module: the ``nn.Module`` holding every trained parameter (e.g. a ``ModuleList`` of
        the model and a neural baseline).
    :param context: from :func:`init_distributed`.

    Example:
        >>> # under torchrun: ctx = init_distributed("cpu")
        >>> # svi = DataParallelSVI(vae, vae.model, vae.guide, torch.optim.Adam, elbo, ctx)
        >>> # loss = svi.step(global_batch)
    """

    def __init__(
        self,
        module: nn.Module,
        model: Callable,
        guide: Callable,
        optim_factory: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        loss: ELBO,
        context: DistributedContext,
    ) -> None:
        super().__init__(model, guide, optim_factory, loss)
        self.context = context
        wrapped = ELBOLoss(module, model, guide, loss)
        if context.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [context.local_rank] if context.backend == "nccl" else None
            wrapped = DistributedDataParallel(wrapped, device_ids=ids)
        self.loss_module = wrapped

    def _loss_and_grads(self, *args, **kwargs) -> float:
        if not args or not torch.is_tensor(args[0]):
            raise DVAEInputError("DataParallelSVI needs the data batch as first argument")
        shard = (self.context.shard(args[0]),) + tuple(args[1:])
        loss = self.loss_module(*shard, **kwargs)
        (loss * self.context.world_size).backward()
        return self.context.all_reduce_sum(float(loss.detach()))


def leave_process_group(ok: bool) -> None:
    """Leave the process group this process joined, if any (``ok``: after a successful run).

    Example:
        >>> leave_process_group(ok=True)  # not under torchrun: nothing to do
    """
    if dist.is_initialized():
        DistributedContext(world_size=dist.get_world_size()).shutdown(wait=ok)
