"""Live source tokens/s against harvest tokens/s and shard-fed training tokens/s, in one run;
or (--pack-layers) a pack over several layers against one live run per layer.

    python benchmarks/live_throughput.py                     # MiniLM layer 3, 16k tokens, CPU
    python benchmarks/live_throughput.py --tokens 65536 --layer 5 --device cuda
    python benchmarks/live_throughput.py --pack-layers 3,4,5 --tokens 8192

--pack-layers: SAE-tokens/s (SAEs x tokens each / wall time, start-up included: model load,
held-out rows, pool fill) of one pack of 2 SAEs (TopK, ReLU) per layer on all the layers, fed
by one forward pass per batch, against one such pack per layer run one after another (each its
own model load and forward passes, each stopped after its layer).

On the same model, text, layer and ctx_len, interleaved and repeated (best of --repeats, because
this machine's other work makes single timings noisy):
  - harvest       : `harvest` writing float32 shards of --tokens rows (model + writer);
  - live stream   : LiveDataModule's training batches alone (model + shuffle pool), no SAE;
  - shard training: `train` on the harvested shards (TopK, d_sae = 8 x d_in, k 32);
  - live training : `train` on data.live, the same SAE, batch and tokens.
Training rates count steady-state steps (timed by a callback from the end of the first step),
so model loading, validation and the shuffle pool's first fill are left out of them; the
harvest and the live stream are timed whole, with the model already loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from sae_lab.assets import write_corpus  # noqa: E402
from sae_lab.data import harvest as H  # noqa: E402
from sae_lab.data.config import DataConfig  # noqa: E402
from sae_lab.data.live import LiveDataModule  # noqa: E402
from sae_lab.training.config import TrainConfig  # noqa: E402
from sae_lab.training.run import train  # noqa: E402


class StepClock(pl.Callback):
    """Tokens/s of the steps after the first (data loading included, start-up left out)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.times = batch_size, []

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter())

    @property
    def rate(self) -> float:
        return (len(self.times) - 1) * self.batch_size / (self.times[-1] - self.times[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--tokens", type=int, default=16_384)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--forward-batch", type=int, default=16, help="windows per forward pass")
    ap.add_argument("--batch-size", type=int, default=1024, help="training tokens per step")
    ap.add_argument("--shuffle-buffer", type=int, default=4096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--text", type=Path, help="corpus file (default: stdlib docstrings)")
    ap.add_argument("--pack-layers", help="comma-separated layers: time a pack over them "
                    "against one live run per layer (nothing else)")
    args = ap.parse_args()
    if args.pack_layers:
        return layer_packs(args, [int(v) for v in args.pack_layers.split(",")])

    with tempfile.TemporaryDirectory() as tmp:
        text = args.text or write_corpus(Path(tmp) / "corpus.txt", 2 * args.tokens + 8192)
        src = dict(model=args.model, dataset=str(text), layers=(args.layer,),
                   ctx_len=args.ctx_len, batch_size=args.forward_batch, device=args.device)
        live = {**src, "layers": [args.layer], "val_tokens": args.batch_size}
        data = DataConfig(live=live, shuffle_buffer=args.shuffle_buffer)
        dm = LiveDataModule(data, args.batch_size)  # loads the model once, for harvest too
        model, tokenizer = dm.source.model, dm.source.tokenizer

        def harvest(i: int) -> tuple[float, Path]:
            cfg = H.HarvestConfig(**src, out=f"{tmp}/acts{i}", max_tokens=args.tokens + 4096,
                                  dtype="float32", shard_rows=4096, block_rows=4096,
                                  progress=False)
            t = time.perf_counter()
            out = H.harvest(cfg, model, tokenizer)[args.layer]
            return (args.tokens + 4096) / (time.perf_counter() - t), out

        def stream() -> float:
            t, n = time.perf_counter(), 0
            for batch in dm.train_dataloader():
                n += len(batch)
                if n >= args.tokens:
                    break
            return n / (time.perf_counter() - t)

        def training(name: str, source: dict) -> float:
            clock = StepClock(args.batch_size)
            cfg = TrainConfig.from_dict({
                "sae": {"architecture": "topk", "k": 32, "expansion_factor": 8},
                "data": {**source, "shuffle_buffer": args.shuffle_buffer},
                "batch_size": args.batch_size, "max_tokens": args.tokens,
                "val_every_steps": 10**6, "val_batches": 1, "progress_bar": False,
                "save_checkpoints": False, "out_dir": f"{tmp}/{name}",
                "device": "cuda" if str(dm.source.device).startswith("cuda") else "cpu",
            })
            train(cfg, callbacks=[clock], logger=False, progress_lines=False)
            return clock.rate

        best: dict[str, float] = {}
        for i in range(args.repeats):
            rate, shards = harvest(i)
            rates = {"harvest": rate, "live stream": stream(),
                     "shard training": training(f"shards{i}", {"shards": str(shards)}),
                     "live training": training(f"live{i}", {"live": live})}
            for k, v in rates.items():
                best[k] = max(best.get(k, 0.0), v)

    print(f"{args.model} layer {args.layer}, {args.tokens} tokens, ctx {args.ctx_len}, "
          f"device {dm.source.device}, {torch.get_num_threads()} threads; best of "
          f"{args.repeats}; TopK k=32, d_sae={8 * dm.d_in}, batch {args.batch_size}")
    for k, v in best.items():
        print(f"  {k:15s}: {v:9.0f} tokens/s")
    print(f"  live stream / harvest          = {best['live stream'] / best['harvest']:.2f}")
    print(f"  live training / shard training = "
          f"{best['live training'] / best['shard training']:.2f}")
    print(f"  live training / harvest        = {best['live training'] / best['harvest']:.2f}")


def layer_packs(args: argparse.Namespace, layers: list[int]) -> None:
    from sae_lab.training.pack import train_pack

    saes = {"topk": {"architecture": "topk", "k": 32, "expansion_factor": 4},
            "relu": {"architecture": "relu", "expansion_factor": 4}}
    with tempfile.TemporaryDirectory() as tmp:
        text = args.text or write_corpus(Path(tmp) / "corpus.txt", 2 * args.tokens + 8192)

        def cfg(layer: int, arch: str) -> TrainConfig:
            live = dict(model=args.model, dataset=str(text), layers=[layer],
                        ctx_len=args.ctx_len, batch_size=args.forward_batch,
                        device=args.device, val_tokens=args.batch_size)
            return TrainConfig.from_dict({
                "sae": saes[arch], "data": {"live": live, "shuffle_buffer": args.shuffle_buffer},
                "batch_size": args.batch_size, "max_tokens": args.tokens,
                "val_every_steps": 10**6, "val_batches": 1, "save_checkpoints": False,
                "device": "cpu" if args.device == "cpu" else "auto",
                "out_dir": f"{tmp}/{arch}{layer}"})

        def run(group: list[int], i: int) -> float:
            cfgs = [cfg(layer, a) for layer in group for a in saes]
            t = time.perf_counter()
            train_pack(cfgs, [f"{a}{layer}" for layer in group for a in saes],
                       f"{tmp}/pack{i}", logger=False, save_checkpoints=False)
            return time.perf_counter() - t

        best = {"one pack, all layers": math.inf, "a pack per layer": math.inf}
        for i in range(args.repeats):
            best["one pack, all layers"] = min(best["one pack, all layers"], run(layers, i))
            best["a pack per layer"] = min(best["a pack per layer"],
                                           sum(run([layer], i) for layer in layers))
    n = len(layers) * len(saes) * args.tokens
    print(f"{args.model} layers {layers}, {len(saes)} SAEs per layer (TopK k 32, ReLU; "
          f"expansion 4), {args.tokens} tokens each, ctx {args.ctx_len}, batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads; best of {args.repeats}")
    for k, wall in best.items():
        print(f"  {k:21s}: {wall:7.1f} s, {n / wall:9.0f} SAE-tokens/s")
    print(f"  one pack / a pack per layer = "
          f"{best['a pack per layer'] / best['one pack, all layers']:.2f}x")


if __name__ == "__main__":
    main()
