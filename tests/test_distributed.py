"""Data-parallel gradients on 2 CPU processes (gloo over loopback) equal the 1-process ones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pyro_dvae.distributed import DistributedContext, ELBOLoss, init_distributed
from pyro_dvae.errors import DVAEInputError

WORKER = textwrap.dedent(
    """
    import sys, torch, pyro
    from torch.nn.parallel import DistributedDataParallel as DDP
    from pyro_dvae import DiscreteVAE
    from pyro_dvae.distributed import ELBOLoss, init_distributed
    from pyro_dvae.infer import build_elbo

    torch.set_num_threads(1)
    estimator, out = sys.argv[1], sys.argv[2]
    ctx = init_distributed("cpu")
    pyro.set_rng_seed(ctx.rank + 1)  # different inits per rank: DDP must broadcast rank 0's
    vae = DiscreteVAE(10, "2x3", encoder_hidden=(12,))
    ddp = DDP(ELBOLoss(vae, vae.model, vae.guide, build_elbo(estimator)))
    x = (torch.rand(7, 10, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    (ddp(ctx.shard(x)) * ctx.world_size).backward()
    with torch.no_grad():  # an evaluation forward: DDP's reducer must not wait for a backward
        total = ctx.all_reduce_sum(float(ddp(ctx.shard(x))))
    if ctx.is_main:
        torch.save({"state": vae.state_dict(), "loss": total,
                    "grads": {n: p.grad for n, p in vae.named_parameters()}}, out)
    del ddp  # release DDP's reducer (and its gloo work) before leaving the process group
    ctx.shutdown()
    from pyro_dvae.__main__ import exit_rank  # the CLI's rank exit: no gloo teardown abort
    exit_rank(0)
    """
)


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
@pytest.mark.parametrize("estimator", ["exact", "enumerate"])
def test_two_process_gradient_equals_one_process(tmp_path, estimator):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "grads.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run(
        [*cmd, str(script), estimator, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(out, weights_only=True)

    from pyro_dvae import DiscreteVAE
    from pyro_dvae.infer import build_elbo

    vae = DiscreteVAE(10, "2x3", encoder_hidden=(12,))
    vae.load_state_dict(got["state"])  # rank 0's initial parameters (DDP broadcast them)
    x = (torch.rand(7, 10, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    loss = ELBOLoss(vae, vae.model, vae.guide, build_elbo(estimator))(x)
    loss.backward()
    # tolerance: float32 sums in a different order (two shards, then an all-reduce)
    assert abs(float(loss.detach()) - got["loss"]) < 1e-4 * abs(float(loss.detach()))
    for name, p in vae.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-4, atol=1e-5)


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistributedContext() and not ctx.is_distributed
    assert ctx.all_reduce_sum(2.5) == 2.5 and ctx.broadcast_object("a") == "a"


def test_shards_cover_the_batch_in_order():
    batch = torch.arange(7)
    parts = [DistributedContext(rank=r, world_size=3).shard(batch) for r in range(3)]
    assert torch.equal(torch.cat(parts), batch)
    assert [len(p) for p in parts] == [3, 2, 2]


def test_elbo_without_differentiable_loss_is_refused():
    class NoDifferentiable:
        pass

    with pytest.raises(DVAEInputError, match="differentiable_loss"):
        ELBOLoss(torch.nn.Linear(1, 1), lambda: None, lambda: None, NoDifferentiable())
