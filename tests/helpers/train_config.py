"""A tiny TrainConfig on synthetic data, for runs of a few seconds."""

import yaml

from sae_lab.training.config import TrainConfig

TINY = {
    "sae": {"architecture": "topk", "k": 4, "expansion_factor": 4},
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 8192}},
    "batch_size": 256,
    "max_tokens": 256 * 20,
    "val_every_steps": 10,
    "val_batches": 2,
    "progress_bar": False,
}


def tiny(tmp_path, **over) -> TrainConfig:
    d = yaml.safe_load(yaml.safe_dump(TINY))
    for k, v in over.items():
        if isinstance(v, dict):
            d[k].update(v)
        else:
            d[k] = v
    d["out_dir"] = str(tmp_path / "run")
    return TrainConfig.from_dict(d)
