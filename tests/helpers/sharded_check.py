"""The body of tests/sae/test_sharded.py, run in each of two gloo processes: every architecture
(both training paths) latent-sharded over 2 ranks and data-parallel over 2 ranks against one
process on the whole SAE and the whole batch, and a launched run (training/launch.py). Each rank
writes the largest differences it saw to out_dir/rank{r}.json; the test asserts on them."""

import copy
import json
from pathlib import Path

import torch
import torch.distributed as dist

from sae_lab import ARCHITECTURES, sae_config
from sae_lab.sae.sharded import Mesh, gather_sae, latent_dim, reduce_grads, shard_sae
from sae_lab.training.config import TrainConfig
from sae_lab.training.optim import optimizer
from sae_lab.training.parallel import train_step

ARCHS = ("relu", "topk", "batchtopk", "gated", "jumprelu", "matryoshka")
D_IN, D_SAE, B, STEPS = 8, 32, 16, 20


def build(arch: str, decoder: str | None, dtype: str, seed: int = 0):
    """A whole SAE with every parameter away from its start (so each gradient term shows) and a
    third of its latents dead (so AuxK runs)."""
    kw = {"k": 4} if arch in ("topk", "batchtopk", "matryoshka") else {}
    if arch == "jumprelu":
        kw = {"threshold_init": 0.3, "bandwidth": 0.5}
    if decoder is not None:
        kw["decoder"] = decoder
    cfg = sae_config(arch, d_in=D_IN, d_sae=D_SAE, dtype=dtype, dead_tokens=B, **kw)
    torch.manual_seed(seed)
    sae = ARCHITECTURES[arch](cfg)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name not in ("W_enc", "W_dec"):
                p.add_(torch.randn_like(p) * 0.1)
        sae.W_dec.mul_(torch.rand(D_SAE, 1, dtype=sae.W_dec.dtype) + 0.5)
        sae.tokens_since_fired[::3] = B
        if arch == "batchtopk" or arch == "matryoshka":
            sae.threshold.fill_(0.2)
    return sae


def gather(t: torch.Tensor, dim: int | None, group=None) -> torch.Tensor:
    if dim is None or group is None:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def one_step_float64(arch: str, decoder: str, mesh: Mesh) -> dict[str, float]:
    """Loss, x_hat, parts, l0, fired, codes and every gradient of one training step."""
    whole = build(arch, decoder, "float64")
    x = torch.randn(B, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sharded = shard_sae(copy.deepcopy(whole), mesh)
    out: dict[str, float] = {}
    results = []
    for sae in (whole, sharded):
        res = sae.training_loss(x, 0, 0.7)
        res.loss.backward()
        if sae.shard is not None:
            reduce_grads(sae)
        results.append(res)
    a, b = results
    g = mesh.latent_group
    out["loss"] = diff(a.loss, b.loss)
    out["x_hat"] = diff(a.x_hat, b.x_hat)
    out["l0"] = diff(a.l0, b.l0)
    out["fired"] = diff(a.fired, gather(b.fired, 0, g))
    for key in a.parts:
        out[f"part {key}"] = diff(a.parts[key], b.parts[key])
    for name, p in whole.named_parameters():
        q = dict(sharded.named_parameters())[name]
        out[f"grad {name}"] = diff(p.grad, gather(q.grad, latent_dim(name, q), g))
    for mode in ("train", "eval"):
        getattr(whole, mode)()
        getattr(sharded, mode)()
        with torch.no_grad():
            z, z_s = whole.encode(x), sharded.encode(x)
            out[f"codes ({mode})"] = diff(z, gather(z_s, 1, g))
            out[f"decode ({mode})"] = diff(whole.decode(z, x), sharded.decode(z_s, x))
    return out


def train(sae, x_batches, cfg: TrainConfig):
    opt, sched = optimizer(sae, cfg)
    for step, x in enumerate(x_batches):
        train_step(sae, opt, sched, x, step, cfg)
    return sae


def twenty_steps_float32(arch: str, meshes: dict[str, Mesh]) -> dict[str, dict[str, float]]:
    """Every weight and buffer after 20 steps (the architecture's default training path):
    sharded over each mesh vs one process on the whole SAE and batch."""
    cfg = TrainConfig(batch_size=B, max_tokens=B * STEPS, lr=3e-3, lr_warmup_steps=3,
                      lr_decay_start=0.5, sparsity_warmup_steps=5)
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(B, D_IN, generator=gen) for _ in range(STEPS)]
    whole = train(build(arch, None, "float32"), batches, cfg).state_dict()
    out = {}
    for how, mesh in meshes.items():
        part = B // mesh.data
        mine = [x[mesh.data_rank * part:(mesh.data_rank + 1) * part] for x in batches]
        got = gather_sae(train(shard_sae(build(arch, None, "float32"), mesh), mine, cfg))
        got = got.state_dict()
        out[f"{how} {arch} float32"] = {f"weights {name}": diff(t, got[name])
                                        for name, t in whole.items()}
    return out


LAUNCHED = {
    "sae": {"architecture": "batchtopk", "k": 4, "expansion_factor": 4},
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 2048}},
    "batch_size": 64, "max_tokens": 64 * 10, "lr": 3e-3, "log_every_steps": 100,
    "parallel": {"latents": 2},
}


def launched_run(out_dir: str, mesh: Mesh) -> dict[str, float]:
    """What `sae-lab train` with parallel.latents 2 runs in each process (launch.run_rank),
    against the same steps in one process: the saved SAE and its metrics."""
    from sae_lab.sae import load
    from sae_lab.training.launch import run_rank
    from sae_lab.training.run import build_module, first_batch, make_datamodule

    cfg = TrainConfig.from_dict({**LAUNCHED, "out_dir": str(Path(out_dir, "run"))})
    run_rank(cfg, mesh)
    dm = make_datamodule(cfg)
    module = build_module(cfg, dm)
    module.initialise(first_batch(dm))
    sae = module.sae
    batches = [sae.normalize_input(module._scaled(b)) for b, _ in
               zip(dm.train_dataloader(), range(cfg.max_steps), strict=False)]
    module.sae = train(sae, batches, cfg)
    want = module.export_sae().state_dict()
    got = load(Path(cfg.out_dir, "final"))
    out = {f"weights {name}": diff(t, got.state_dict()[name]) for name, t in want.items()
           if name != "tokens_since_fired"}
    out["d_sae not 64"] = float(got.d_sae != 64)
    metrics = json.loads(Path(cfg.out_dir, "metrics.json").read_text())
    out["fvu outside (0, 1)"] = float(not 0 < metrics["fvu"] < 1)
    return out


def run(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    # an error stops this rank; torch.multiprocessing.spawn then ends the other
    results: dict[str, dict[str, float]] = {}
    meshes = {"latents": Mesh(latents=2), "data": Mesh(data=2)}
    for arch in ARCHS:
        for decoder in ("dense", "sparse"):
            results[f"latents {arch}/{decoder} float64"] = one_step_float64(
                arch, decoder, meshes["latents"])
        results.update(twenty_steps_float32(arch, meshes))
    results["launched float32"] = launched_run(out_dir, meshes["latents"])
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()
