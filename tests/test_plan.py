"""`sae-lab plan`: exact shard bytes, model bytes, SAE state, and refusal before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T

from sae_lab import plan as P
from sae_lab.cli import main
from sae_lab.data.shards import ShardSetWriter, read_manifest
from sae_lab.training.config import ConfigError, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _tar_bytes(directory):
    return sum(p.stat().st_size for p in directory.glob("shard-*.tar"))


def test_shard_bytes_match_a_real_harvest_exactly(tiny_shards):
    """tiny_shards: `harvest` of the tiny GPT-2, 3000 rows, shard_rows 2048, block_rows 1024."""
    m = read_manifest(tiny_shards)
    assert m["tokens"] == 3000 and len(m["shards"]) == 2
    assert P.shard_bytes(3000, m["d_in"], m["dtype"], 2048, 1024) == _tar_bytes(tiny_shards)


@pytest.mark.parametrize("rows,d_in,dtype", [(5000, 48, "float16"), (1500, 130, "bfloat16")])
def test_shard_bytes_match_the_writer_exactly(tmp_path, rows, d_in, dtype):
    w = ShardSetWriter(tmp_path, {"model": "m"}, dtype, shard_rows=2048, block_rows=1024)
    g = torch.Generator().manual_seed(0)
    w.add(0, torch.randn(rows, d_in, generator=g), torch.randint(0, 9, (rows,), generator=g),
          torch.zeros(rows, dtype=torch.long), torch.arange(rows))
    w.finish()
    assert P.shard_bytes(rows, d_in, dtype, 2048, 1024) == _tar_bytes(tmp_path)


def test_harvest_plan_disk_is_the_shard_bytes_of_every_layer(tiny_lm, corpus, tmp_path):
    from sae_lab.data.harvest import HarvestConfig

    cfg = HarvestConfig(model=str(tiny_lm), dataset=str(corpus), out=str(tmp_path),
                        layers=(0, 1), max_tokens=3000, dtype="float32", shard_rows=2048,
                        block_rows=1024, device="cpu")
    plan = P.plan_harvest(cfg)
    assert plan.total("disk") == 2 * P.shard_bytes(3000, 64, "float32", 2048, 1024)
    assert plan.device == "cpu" and plan.total("device") == 0  # a CPU run: all in host RAM


def test_model_bytes_are_the_loaded_models_bytes(tmp_path):
    torch.manual_seed(0)
    cfg = T.LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=128, vocab_size=100)
    model = T.LlamaModel(cfg)

    def nbytes(m, dtype=4):
        return (sum(p.numel() * dtype for p in m.parameters())
                + sum(b.numel() * b.element_size() for b in m.buffers()))

    assert P.model_bytes(cfg) == nbytes(model)
    del model.layers[2]
    assert P.model_bytes(cfg, keep_layers=2) == nbytes(model)
    # 8bit: each block linear weight one byte plus a float32 scale per output row.
    linear = sum(mod.weight.numel() for mod in model.layers.modules()
                 if isinstance(mod, torch.nn.Linear))
    rows = sum(mod.weight.shape[0] for mod in model.layers.modules()
               if isinstance(mod, torch.nn.Linear))
    assert P.model_bytes(cfg, quantize="8bit", keep_layers=2) == (
        nbytes(model) - 4 * linear + linear + 4 * rows)


def test_train_plan_counts_sae_state_and_pre_activations_known_answer():
    cfg = TrainConfig.from_dict({"sae": {"architecture": "topk", "d_sae": 512, "k": 8},
                                 "data": {"synthetic": {"d": 64, "n_tokens": 10_000}},
                                 "batch_size": 256, "max_tokens": 10_000, "device": "cpu"})
    plan = P.plan_train(cfg)
    needs = {n.what.split(":")[0].split(" [")[0]: n.bytes for n in plan.needs}
    params = 2 * 64 * 512 + 512 + 64
    assert needs["SAE 64 x 512"] == 4 * params * 4
    assert needs["pre-activations"] == 1 * 256 * 512 * 4  # sparse path: one buffer
    dense = P.plan_train(TrainConfig.from_dict({**cfg.to_dict(), "sae": {
        "architecture": "topk", "d_sae": 512, "k": 8, "decoder": "dense"}}))
    assert sum(n.bytes for n in dense.needs if n.what.startswith("pre-")) == 3.5 * 256 * 512 * 4


def test_train_plan_counts_the_held_out_evaluation_beyond_a_sparse_step():
    """Validation and the final metrics encode densely at batch_size: TopK's encode holds the
    pre-activations and the dense codes z [B, d_sae] (2.1 buffers, measured), which outlive a
    sparse step's one buffer and its batch temporaries; a dense path that needs more (gated: 9)
    adds nothing."""
    base = {"data": {"synthetic": {"d": 64, "n_tokens": 10_000}}, "batch_size": 256,
            "max_tokens": 10_000, "device": "cpu"}
    cfg = TrainConfig.from_dict({**base, "sae": {"architecture": "topk", "d_sae": 512, "k": 8}})
    needs = {n.what.split(":")[0]: n.bytes for n in P.plan_train(cfg).needs}
    expected = 2.1 * 256 * 512 * 4 - 256 * 512 * 4 - 8 * 256 * 64 * 4
    assert needs["held-out evaluation"] == int(expected)
    gated = TrainConfig.from_dict({**base, "sae": {"architecture": "gated", "d_sae": 512}})
    assert not any(n.what.startswith("held-out") for n in P.plan_train(gated).needs)


def test_check_names_the_limit_crossed():
    plan = P.Plan("t", "cpu", ".", [P.Need("x", "host", 3 * P.GiB)])
    P.check(plan, {"host": (4 * P.GiB, "available host RAM")})
    with pytest.raises(P.PlanError, match=r"needs 3.00 GiB of host but available host RAM is "
                                          r"2.00 GiB .*--no-plan-check"):
        P.check(plan, {"host": (2 * P.GiB, "available host RAM")})


def test_over_budget_harvest_is_refused_before_any_file_is_written(tiny_lm, corpus, tmp_path,
                                                                   capsys):
    out = tmp_path / "shards"
    with pytest.raises(SystemExit) as e:  # 10^12 tokens x 64 x 4 B: 256 TB of shards
        main(["harvest", "--model", str(tiny_lm), "--dataset", str(corpus), "--out", str(out),
              "--max-tokens", str(10**12), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sae-lab harvest: error: plan: needs ") and "of disk but free disk" in err
    assert not out.exists()


def test_over_budget_train_is_refused_and_no_plan_check_skips_the_check(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(P, "host_available", lambda: 2**20)  # 1 MiB of RAM left
    out = tmp_path / "run"
    args = ["train", "--set", "data.synthetic.d=16", "--set", "data.synthetic.n_tokens=2048",
            "--set", "batch_size=256", "--set", "max_tokens=512", "--set", "sae.d_sae=32",
            "--set", f"out_dir={out}", "--set", "progress_bar=false", "--set", "device=cpu"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and "of host but available host RAM is 1.00 MiB" in \
        capsys.readouterr().err
    assert not out.exists()
    import importlib

    run = importlib.import_module("sae_lab.training.run")

    called = []
    monkeypatch.setattr(run, "train", lambda cfg, **kw: called.append(cfg) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # reached train() itself
        main([*args, "--no-plan-check"])
    assert called and called[0].out_dir == str(out)


def test_a_config_plan_cannot_read_is_left_to_the_command(tmp_path, corpus, capsys):
    with pytest.raises(SystemExit):
        main(["harvest", "--model", str(tmp_path / "nope"), "--dataset", str(corpus),
              "--out", str(tmp_path / "o")])
    assert "--model " in capsys.readouterr().err  # harvest's own message, not the plan's


def test_plan_command_prints_the_table_and_the_verdict(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("sae: {architecture: topk, d_sae: 512}\n"
                   "data: {synthetic: {d: 64, n_tokens: 10000}}\nbatch_size: 256\n"
                   "max_tokens: 10000\ndevice: cpu\n")
    main(["plan", str(cfg)])
    out = capsys.readouterr().out
    assert "SAE 64 x 512: parameters, gradients, Adam moments (66,112 params)" in out
    assert "host: " in out and ": fits" in out


def test_a_live_train_plan_counts_the_model_and_its_pool(tiny_lm, corpus):
    """data.live: d_in from the model's config, and the model's weights, one forward pass and the
    shuffle pool on the device, next to the SAE."""
    from sae_lab.plan import model_bytes, model_config, plan_train
    from sae_lab.training.config import TrainConfig

    cfg = TrainConfig.from_dict({
        "data": {"live": {"model": str(tiny_lm), "dataset": str(corpus), "layers": [0],
                          "ctx_len": 32, "batch_size": 8, "device": "cpu"},
                 "shuffle_buffer": 4096},
        "batch_size": 256, "sae": {"architecture": "topk", "expansion_factor": 4}})
    plan = plan_train(cfg)
    needs = {n.what.split(":")[0]: n.bytes for n in plan.needs}
    config = model_config(str(tiny_lm))
    assert needs["live model weights"] == model_bytes(config, "float32", "none", 1)
    assert needs["live shuffle pool"] == 4096 * config.hidden_size * 4
    assert any(n.what.startswith(f"SAE {config.hidden_size} x {4 * config.hidden_size}")
               for n in plan.needs)


def test_a_pack_over_layers_counts_the_deepest_layer_and_every_layers_pool(tiny_lm, corpus):
    from sae_lab.plan import model_bytes, model_config, plan_sweep
    from sae_lab.sweep.schema import sweep_from_dict

    live = {"model": str(tiny_lm), "dataset": str(corpus), "layers": [0], "ctx_len": 32,
            "batch_size": 8, "device": "cpu"}
    sweep = sweep_from_dict({
        "base": {"data": {"live": live, "shuffle_buffer": 4096}, "batch_size": 256,
                 "max_tokens": 1024, "device": "cpu"},
        "architectures": ["topk"], "search": "grid", "pack": 4,
        "space": {"topk": {"layer": {"grid": [0, 1]}}}})
    needs = {n.what.split(":")[0]: n.bytes for n in plan_sweep(sweep).needs}
    config = model_config(str(tiny_lm))
    assert needs["live model weights"] == model_bytes(config, "float32", "none", 2)
    assert needs["live shuffle pool"] == 2 * 4096 * config.hidden_size * 4


# --- packed sweeps ----------------------------------------------------------------------------

PACKED = {"name": "packed",
          "base": {"data": {"synthetic": {"d": 16, "n_tokens": 4096}}, "batch_size": 128,
                   "max_tokens": 1024, "device": "auto", "sae": {"expansion_factor": 4}},
          "architectures": ["relu"],
          "space": {"relu": {"sparsity_coef": {"grid": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}}},
          "search": "grid", "pack": "auto", "resources": {"cpus": 1, "gpus": 0.5}}


def test_packed_sweep_plan_known_answer():
    """6 ReLU SAEs, 16 x 64, on 2 GPUs at half a GPU per pack: 4 slots -> packs of 2 -> 3 packs,
    2 on a GPU. Each pack: its members' state, its largest step, one data source."""
    from sae_lab.sweep.schema import sweep_from_dict

    plan = P.plan_sweep(sweep_from_dict(PACKED), gpus=2, gpu_memory=16 * P.GiB)
    assert plan.title.startswith("sweep packed: 6 SAEs in 3 pack(s) of up to 2, 3 at once, "
                                 "2 per GPU")
    weights = 4 * (16 * 64 + 64 + 64 * 16 + 16)  # W_enc, b_enc, W_dec, b_dec in float32
    counters = 8 * 64  # tokens_since_fired, int64
    member = 4 * weights + counters  # parameters, gradients, two Adam moments
    step = 3.5 * 128 * 64 * 4  # relu's dense path: 3.5 [B, d_sae] float32 buffers
    batch = 8 * 128 * 16 * 4
    autocast = 2 * 2 * weights // 4  # precision auto on CUDA: 16-bit copies of both members
    assert plan.total("device") == 2 * (2 * member + step + batch + autocast + P.CUDA_CONTEXT)
    rows = 4096 + 204  # synthetic rows and the held-out 5%
    assert plan.total("host") == 3 * (rows * 16 * 4 + P.RUNTIME)
    # Tune keeps each pack's last checkpoint and writes the next before deleting it: 2 at once,
    # each with every member's weights, counters and Adam moments.
    assert plan.total("disk") == 2 * 6 * (3 * weights + counters)
    after = [n.bytes for n in plan.needs if n.phase == "after training"]
    assert after == [6 * (weights + counters), (1 + 6) * (weights + counters)]


def test_packed_sweep_plan_splits_packs_as_the_sweep_does():
    """pack: auto cuts packs smaller when the members' memory exceeds half a GPU: the plan
    plans the packs make_packs makes."""
    from sae_lab.sweep.packs import make_packs
    from sae_lab.sweep.schema import sweep_from_dict

    sweep = sweep_from_dict(PACKED)
    plan = P.plan_sweep(sweep, gpus=2, gpu_memory=400_000)  # 100 kB a pack: one SAE each
    assert len(make_packs(sweep, 4, 100_000)) == 6
    assert plan.title.startswith("sweep packed: 6 SAEs in 6 pack(s) of up to 1, 4 at once")


def test_the_kaggle_sweep_fits_two_t4s_and_20_gb(tmp_path):
    """sweeps/kaggle_t4x2.yaml with Llama-3.2-3B's config: two packs, each fitting a 15 GiB T4
    next to the live model, and every checkpoint within /kaggle/working's 20 GB."""
    T.LlamaConfig(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                  num_attention_heads=24, num_key_value_heads=8, vocab_size=128_256,
                  tie_word_embeddings=True).save_pretrained(tmp_path)  # the Hub's widths
    plan = P.plan_file(str(REPO / "sweeps" / "kaggle_t4x2.yaml"),
                       [f"base.data.live.model={tmp_path}"], gpus=2, gpu_memory=15 * P.GiB)
    assert " in 2 pack(s)" in plan.title and plan.device == "cuda"
    assert any(n.what.startswith("live model weights: 17 of 28 blocks") for n in plan.needs)
    P.check(plan, {"disk": (20 * 10**9, "20 GB"), "device": (15 * P.GiB, "a T4")})
    assert plan.total("device") > 10 * P.GiB and plan.total("disk") > 10 * P.GiB  # not vacuous


def test_too_big_sweep_is_refused_before_anything_runs(tmp_path, capsys):
    import yaml

    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({**PACKED, "base": {**PACKED["base"], "sae": {
        "d_sae": 2**26}}}))  # 6 x 2^26 latents x 16 x 2: ~1.4 TB of checkpoints
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("sae-lab sweep: error: plan: needs ")
    assert " of disk but free disk at " in err and not out.exists()
    with pytest.raises(SystemExit) as e:  # planned for two GPUs too small for a pack
        main(["plan", str(path), "--gpus", "2", "--gpu-memory", "1GiB", "--disk", "20TB"])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "disk: " in out.out and "device: " in out.out  # the table, then the verdict
    assert "of device but the memory of one GPU given (--gpu-memory) is 1.00 GiB" in out.err


def test_sizes_are_read_with_their_units():
    assert P.parse_size("20GB") == 20 * 10**9 and P.parse_size("15 GiB") == 15 * 2**30
    assert P.parse_size("1.5MiB") == 3 * 2**19
    with pytest.raises(ValueError, match="'12': expected a size such as 20GB"):
        P.parse_size("12")


def test_pack_sizing_reads_a_live_models_width(tiny_lm, corpus):
    """pack: auto sizes packs by their members' memory: for a live source, at the model's
    hidden size (it assumed d_in 1024 before)."""
    from sae_lab.sweep.packs import expand, member_bytes
    from sae_lab.sweep.schema import sweep_from_dict

    sweep = sweep_from_dict({**PACKED, "base": {**PACKED["base"], "data": {"live": {
        "model": str(tiny_lm), "dataset": str(corpus), "layers": [0]}}}})
    d = P.model_config(str(tiny_lm)).hidden_size
    f = 4 * d
    assert d != 1024 and member_bytes(sweep, expand(sweep)[0]) == 4 * (
        4 * (2 * d * f + f + d) + 4 * 128 * f)


def test_unpacked_sweep_disk_known_answer():
    """One trial per SAE, 2 at once: a running trial's checkpoints (2 while Tune swaps them,
    each with its Lightning state and its SAE), the finished trials' final SAEs."""
    from sae_lab.sweep.schema import sweep_from_dict

    sweep = sweep_from_dict({**PACKED, "pack": 1, "max_concurrent": 2,
                             "resources": {"cpus": 1, "gpus": 0}})
    plan = P.plan_sweep(sweep, gpus=0)
    weights, counters = 4 * (2 * 16 * 64 + 64 + 16), 8 * 64
    saved, checkpoint = weights + counters, 3 * weights + counters
    assert plan.total("disk") == 2 * 2 * (checkpoint + saved) + 4 * saved
    assert [n.bytes for n in plan.needs if n.phase == "after training"] == [6 * saved,
                                                                           7 * saved]


# --- one SAE over several GPUs ----------------------------------------------------------------

TOPK = {"sae": {"architecture": "topk", "d_sae": 512, "k": 8},
        "data": {"synthetic": {"d": 64, "n_tokens": 10_000}}, "batch_size": 256,
        "max_tokens": 10_000}


def _needs(plan):
    return {n.what.split(":")[0].split(" [")[0]: n.bytes for n in plan.needs}


def test_a_latent_sharded_rank_holds_its_share_known_answer():
    """latents 2: half of W_enc, b_enc, W_dec and their gradients and Adam moments on a rank,
    b_dec whole; [B, d_sae / 2] pre-activations; every rank's top 8 per token gathered; the
    partial reconstructions summed. The checkpoints still hold the whole SAE."""
    cfg = TrainConfig.from_dict({**TOPK, "parallel": {"latents": 2}})
    plan = P.plan_train(cfg, gpus=2)
    needs = _needs(plan)
    share = 64 * 256 + 256 + 256 * 64 + 64
    assert needs["SAE 64 x 512, 1/2 of its latents a rank"] == 4 * share * 4
    assert needs["pre-activations"] == 256 * 256 * 4  # sparse TopK: one buffer
    assert needs["top-k candidates gathered from 2 ranks"] == 2 * 256 * 8 * (4 + 8)
    assert needs["partial reconstruction and its all-reduce"] == 2 * 256 * 64 * 4
    whole = 2 * 64 * 512 + 512 + 64
    assert needs["checkpoints"] == 2 * 3 * whole * 4 and needs["final SAE (safetensors)"] == \
        whole * 4
    assert plan.copies["host"] == 2 and plan.total("host") == 2 * (
        (10_000 + 500) * 64 * 4 + P.RUNTIME)  # each rank its own synthetic data


def test_a_data_parallel_rank_holds_the_whole_sae_and_its_rows():
    cfg = TrainConfig.from_dict({**TOPK, "parallel": {"data": 2}})
    needs = _needs(P.plan_train(cfg, gpus=2))
    assert needs["SAE 64 x 512"] == 4 * (2 * 64 * 512 + 512 + 64) * 4
    assert needs["pre-activations"] == 128 * 512 * 4
    assert needs["batch"] == 8 * 128 * 64 * 4
    assert not any(k.startswith(("top-k", "partial")) for k in needs)


def test_parallel_is_checked_against_the_latents_and_the_batch():
    with pytest.raises(ConfigError, match=r"parallel.latents=3: must divide the 512 latents"):
        TrainConfig.from_dict({**TOPK, "parallel": {"latents": 3}})
    with pytest.raises(ConfigError, match=r"batch_size=256: must be a multiple of parallel.data=3"):
        TrainConfig.from_dict({**TOPK, "parallel": {"data": 3}})
    cfg = TrainConfig.from_dict({**TOPK, "sae": {"architecture": "relu", "expansion_factor": 3},
                                 "parallel": {"latents": 2}})  # d_sae 192 once d_in is known
    assert P.plan_train(cfg).total("host") > 0
    cfg.parallel.latents = 5
    with pytest.raises(ConfigError, match=r"parallel.latents=5: must divide the 192 latents"):
        P.plan_train(cfg)


def test_the_refusal_names_the_smallest_split_that_fits():
    cfg = TrainConfig.from_dict(TOPK)
    plan = P.plan_train(cfg, gpus=4)
    one = plan.total("device")
    halves = {latents: P.trial_device(TrainConfig.from_dict({**TOPK, "parallel": {
        "latents": latents}}), 64, "cuda") for latents in (2, 4)}
    assert one > halves[2] > halves[4]
    with pytest.raises(P.PlanError, match=rf"needs {P.human(one)} of device but one GPU is "
                       r"[\d.]+ MiB; fits with parallel.latents 2 \(see"):
        P.check(plan, {"device": (halves[2], "one GPU")})
    with pytest.raises(P.PlanError, match=r"; fits with parallel.latents 4 \("):
        P.check(plan, {"device": (halves[2] - 1, "one GPU")})
    with pytest.raises(P.PlanError, match=r"; no split over 4 GPU\(s\) fits"):
        P.check(plan, {"device": (2**20, "one GPU")})
    # fewest ranks first, latent ranks before data ranks; 3 divides neither 512 nor 256
    assert P.splits(cfg, 64, 4) == [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2), (1, 4)]


MODELS = Path(__file__).resolve().parent / "helpers" / "model_configs"


def test_the_llama3b_relu65k_sweep_fits_two_t4s_and_kaggle_disk():
    """sweeps/llama3b_relu65k_t4x2.yaml with Llama-3.2-3B's config.json: each T4 holds half of
    the 65,536 latents next to the model; one trial at a time, so its two checkpoints and the
    other trials' final SAEs are what the 20 GB hold."""
    over = [f"base.data.live.model={MODELS / 'Llama-3.2-3B'}"]
    plan = P.plan_file(str(REPO / "sweeps" / "llama3b_relu65k_t4x2.yaml"), over, gpus=2,
                       gpu_memory=15 * P.GiB)
    config = P.model_config(str(MODELS / "Llama-3.2-3B"))
    assert config.hidden_size == 3072
    weights = 4 * (2 * 3072 * 65536 + 65536 + 3072)  # W_enc, b_enc, W_dec, b_dec float32
    counters = 8 * 65536
    share = 4 * (2 * 3072 * 32768 + 32768 + 3072)
    b, f = 4096, 32768
    device = (4 * share + 3.5 * b * f * 4 + 8 * b * 3072 * 4 + 2 * b * 3072 * 4
              + P.CUDA_CONTEXT + P.model_bytes(config, "float16", "none", 17)
              + P.forward_bytes(config, 8, 1024, "float16") + 65536 * 3072 * 4)
    assert plan.total("device") == int(device)
    assert 11 * P.GiB < plan.total("device") < 15 * P.GiB
    saved, checkpoint = weights + counters, 3 * weights + counters
    assert plan.total("disk") == 1 * 2 * (checkpoint + saved) + 3 * saved
    assert 16 * P.GiB < plan.total("disk") < 20 * 10**9
    P.check(plan, {"disk": (20 * 10**9, "20 GB"), "device": (15 * P.GiB, "a T4")})
    # In one process the same trial needs 16.08 GiB: refused, naming the split that fits.
    one = P.plan_file(str(REPO / "sweeps" / "llama3b_relu65k_t4x2.yaml"),
                      [*over, "base.parallel.latents=1"], gpus=2, gpu_memory=15 * P.GiB)
    with pytest.raises(P.PlanError, match=r"needs 16.08 GiB of device but a T4 is 15.00 GiB; "
                                          r"fits with base.parallel.latents 2 \("):
        P.check(one, {"disk": (20 * 10**9, "20 GB"), "device": (15 * P.GiB, "a T4")})


def test_the_mistral7b_topk_x100_sweep_fits_eight_16gib_gpus():
    """sweeps/mistral7b_topk_x100.yaml with Mistral-7B's config.json: 409,600 latents over 8
    ranks, each with 51,200 of them, its top k=512 candidates (k_start) from every rank, and an
    8-bit copy of the model's blocks 0-16."""
    plan = P.plan_file(str(REPO / "sweeps" / "mistral7b_topk_x100.yaml"),
                       [f"base.data.live.model={MODELS / 'Mistral-7B-v0.1'}"], gpus=8,
                       gpu_memory=16 * P.GiB)
    config = P.model_config(str(MODELS / "Mistral-7B-v0.1"))
    b, f, d = 4096, 51200, 4096
    share = 4 * (2 * d * f + f + d)
    device = (4 * share + b * f * 4 + 8 * b * d * 4 + (2.1 - 1) * b * f * 4 - 8 * b * d * 4
              + 8 * b * 512 * 12 + 2 * b * d * 4 + P.CUDA_CONTEXT
              + P.model_bytes(config, "float16", "8bit", 17)
              + P.forward_bytes(config, 4, 1024, "float16") + 32768 * d * 4)
    assert plan.total("device") == int(device)
    P.check(plan, {"device": (16 * P.GiB, "a 16 GiB GPU")})
    assert plan.total("device") > 13 * P.GiB  # not vacuous
    weights = 4 * (2 * d * 409600 + 409600 + d)
    assert plan.total("disk") == 2 * (4 * weights + 2 * 8 * 409600) + 2 * (weights + 8 * 409600)


def test_a_checkpoint_holds_what_plan_counts_with_float32_moments(tmp_path):
    """plan counts a checkpoint as the SAE's weights and buffers and Adam's two moments in the
    parameters' float32: moments rounded to bfloat16 would not resume exactly
    (benchmarks/resume_moments.py), so a run's checkpoint keeps them whole."""
    from sae_lab.training.run import train

    cfg = TrainConfig.from_dict({**TOPK, "max_tokens": 512, "val_every_steps": 1,
                                 "val_batches": 1, "out_dir": str(tmp_path / "run"),
                                 "progress_bar": False, "device": "cpu"})
    train(cfg, logger=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    sae = [t for k, t in ckpt["state_dict"].items() if k.startswith("sae.")]
    moments = [t for state in ckpt["optimizer_states"][0]["state"].values()
               for k, t in state.items() if k in ("exp_avg", "exp_avg_sq")]
    assert len(moments) == 2 * 4 and {t.dtype for t in moments} == {torch.float32}
    held = sum(t.numel() * t.element_size() for t in sae + moments)
    assert held == P.sae_bytes(cfg.sae, 64).checkpoint == 3 * 4 * 66_112 + 8 * 512
