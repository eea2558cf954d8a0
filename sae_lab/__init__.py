"""sae_lab: harvest activations, train sparse autoencoders, sweep, compare and export them.

    import sae_lab
    result = sae_lab.train(sae_lab.TrainConfig(...))   # -> TrainResult(sae, metrics, out_dir)
    sae = sae_lab.load("runs/sae/final")

`sae_lab.train` is the function; the training code lives in the subpackage of the same name and
is imported as `from sae_lab.train.run import ...`.
"""

__version__ = "0.1.0"

from sae_lab.sae import ARCHITECTURES, SAE, SAEConfig, load  # noqa: E402
from sae_lab.train.config import DataConfig, SyntheticConfig, TrainConfig  # noqa: E402
from sae_lab.train.run import TrainResult, train  # noqa: E402

__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "DataConfig", "SyntheticConfig", "TrainConfig",
    "TrainResult", "load", "train", "__version__",
]
