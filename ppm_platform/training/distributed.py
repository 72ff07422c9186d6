"""Data-parallel training: the same training loop in one process or in N ranks (torch DDP over gloo, CPU),
launched on Spark with pyspark's ``TorchDistributor``.

The loops (:func:`ppm_platform.training.urm_train.fit_multitask_batches`, ``ppm_train._pretrain``) take a
:class:`Ranks`. With one rank every method is the identity (no process group, no copy), so the single-process
path is the distributed one with ``world == 1`` and gives the numbers it always gave. With N ranks:

- **the global batch is the single-process batch**: all ranks draw the same seeded chunk order and row
  permutation, and rank ``r`` takes rows ``r::N`` of each global batch of ``batch_size`` rows
  (:meth:`Ranks.batch_plan`). Its loss is scaled by ``N * len(rows) / len(batch)``, so the gradient DDP
  averages over the ranks is the gradient of the mean loss over the global batch: the same SGD step as one
  process up to float summation order (and dropout masks, drawn per rank);
- **each rank reads only its rows**: the row positions it trains on are known before the chunk is read, so
  it decodes the chunk's row groups and builds tensors for its rows only (no collect to the driver);
- validation is scored on a ``r::N`` shard per rank and gathered (:meth:`Ranks.gather`), so every rank
  computes the same validation AUC and keeps the same best epoch; the chief (rank 0) scores the final
  metrics and writes the artifacts;
- checkpoints (:mod:`ppm_platform.training.checkpoint`) are written after every epoch, and a run relaunched
  after a killed rank or worker resumes from the last one (:func:`run_data_parallel` retries the launch).

Sources: PyTorch "Getting started with distributed data parallel" and ``torch.distributed`` (gloo backend);
pyspark ``pyspark.ml.torch.distributor.TorchDistributor`` (one Spark barrier task per rank, ``torchrun``
inside each, rank 0's return value back on the driver).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch

log = logging.getLogger("ppm_platform.training")

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training ranks: ``rank`` in ``[0, world)``; rank 0 is the chief.

    ``Ranks()`` (world 1) is the single-process case: no process group, every collective returns its input.
    """

    rank: int = 0
    world: int = 1

    @property
    def chief(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def batch_plan(self, n: int, perm: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, float]]:
        """This rank's part of each global batch of a shuffled chunk.

        Args:
            n: rows in the chunk; perm: int64 ``[n]``, the chunk's seeded row order (the same on every rank);
            batch_size: rows per global batch (the single-process batch size).

        Returns:
            ``[(rows int64 [~batch_size / world], loss scale), ...]``, one entry per global batch, in order:
            rows ``r::world`` of the batch's positions in ``perm``, scale ``world * len(rows) / len(batch)``
            (1.0 with one rank). A global batch with fewer rows than ranks (a chunk's last ``< world`` rows)
            is skipped on every rank, so every rank runs the same number of steps (DDP needs it).
        """
        plan = []
        for s in range(0, n, batch_size):
            b = perm[s:s + batch_size]
            if len(b) < self.world:
                continue
            rows = b[self.rank::self.world]
            plan.append((rows, 1.0 if self.world == 1 else self.world * len(rows) / len(b)))
        return plan

    def shard(self, n: int) -> np.ndarray:
        """Positions ``r::world`` of ``n`` rows (validation scoring); all of them with one rank."""
        return np.arange(self.rank, n, self.world)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel(module)`` with more than one rank (gradients averaged over the ranks in
        the backward pass; initial weights broadcast from rank 0), else ``module`` itself."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    def gather(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Every rank's arrays concatenated in rank order (``all_gather_object``): each entry of the result is
        ``np.concatenate`` of that entry over the ranks. With one rank: ``arrays``."""
        if not self.distributed:
            return arrays
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, arrays)
        return [np.concatenate([p[i] for p in parts]) for i in range(len(arrays))]

    def broadcast(self, obj: T) -> T:
        """The chief's ``obj`` on every rank (pickled by ``broadcast_object_list``); with one rank: ``obj``."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.chief else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op with one rank)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Ranks()


def _rank_main(job: Callable[[Ranks], Any], timeout_s: int) -> Any:
    """Body of every rank under ``torchrun``: join the gloo process group (``RANK`` / ``WORLD_SIZE`` /
    ``MASTER_ADDR`` / ``MASTER_PORT`` set by torchrun), run ``job(ranks)``, leave the group. Returns the
    chief's result on every rank (broadcast, which also keeps every rank until the chief has written): in
    ``local_mode`` all ranks write their return value to the same output file, so each must write the chief's."""
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    ranks = Ranks(dist.get_rank(), dist.get_world_size())
    try:
        out = job(ranks)
        out = ranks.broadcast(out if ranks.chief else None)
    finally:
        dist.destroy_process_group()
    return out


def run_data_parallel(settings, job: Callable[[Ranks], T], what: str) -> tuple[T, int]:
    """Run ``job`` (a picklable callable of :class:`Ranks`) on ``settings.training.processes`` ranks.

    One process: ``job(SINGLE)`` here. More: ``TorchDistributor(num_processes, local_mode, use_gpu=False)
    .run`` on the profile's SparkSession (:func:`ppm_platform.features.spark.get_spark`), one Spark barrier
    task and ``torchrun`` process per rank on the executors (or ``torchrun --standalone`` on this machine in
    ``local_mode``). A failed launch (a rank or worker killed, a lost executor) is retried up to
    ``training.max_restarts`` times; the job resumes from its last epoch checkpoint.

    Args:
        job: runs the training on one rank and returns the chief's result (must be small: it comes back
            through Spark; the trainers return the folder they published the model to).
        what: the name used in the log lines and errors ("PPM", "URM", "Base").

    Returns:
        (the chief's return value, launches it took: 1 + the retries).

    Raises:
        RuntimeError: every attempt failed (the last attempt's error chained), naming ``what`` and the attempts.
    """
    t = settings.training
    if t.processes <= 1:
        return job(SINGLE), 1
    from pyspark.ml.torch.distributor import TorchDistributor

    from ppm_platform.features.spark import get_spark

    spark = get_spark(settings, app_name=f"ppm-platform-train-{what.lower()}")
    local = t.local_mode if t.local_mode is not None else settings.spark.master.startswith("local")
    # torch in every rank uses one intra-op thread per rank (see PPMSettings.threads): N ranks on N cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    last: BaseException | None = None
    for attempt in range(t.max_restarts + 1):
        try:
            log.info("%s: training on %d ranks (%s), attempt %d", what, t.processes,
                     "torchrun on the driver" if local else "Spark executors", attempt + 1)
            dist = TorchDistributor(num_processes=t.processes, local_mode=local, use_gpu=False)
            return dist.run(_rank_main, job, t.collective_timeout_s), attempt + 1
        except Exception as e:  # a killed rank surfaces as a failed Spark stage / torchrun exit
            last = e
            log.warning("%s: distributed training attempt %d of %d failed (%s: %s); %s", what, attempt + 1,
                        t.max_restarts + 1, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "",
                        "resuming from the last checkpoint" if attempt < t.max_restarts else "giving up")
    raise RuntimeError(f"{what}: distributed training failed {t.max_restarts + 1} times on {t.processes} ranks; "
                       f"last error: {type(last).__name__}: {last}") from last
