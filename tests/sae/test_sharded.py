"""One SAE over two processes (gloo, CPU): latent-sharded (each rank half the latents) and
data-parallel (each rank half the batch) against one process on the whole SAE and batch, for
every architecture: loss, x_hat, codes, parts and every gradient of one step on both training
paths (float64, 1e-9), every weight and buffer after 20 steps (float32, 1e-5); then a run as
`sae-lab train` with parallel.latents 2 launches it, against the same steps in one process. One
spawn of two processes runs every case (tests/helpers/sharded_check.py): starting them and
importing torch is most of the cost."""

import json

import torch.multiprocessing as mp
from helpers.sharded_check import ARCHS, run

TOL = {"float64": 1e-9, "float32": 1e-5}


def test_sharded_and_data_parallel_match_one_process(tmp_path):
    mp.spawn(run, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # float64: 2 paths; float32: latents, data; the launched run
        assert len(results) == 4 * len(ARCHS) + 1
        for case, diffs in results.items():
            tol = TOL[case.split()[-1]]
            assert diffs, case
            off = {what: d for what, d in diffs.items() if not d <= tol}
            assert not off, f"rank {rank}, {case}: {off}"
