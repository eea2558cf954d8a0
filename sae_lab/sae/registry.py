"""name -> architecture class. A new architecture is one file plus one line here."""

from __future__ import annotations

from sae_lab.sae.base import SAE
from sae_lab.sae.batchtopk import BatchTopKSAE
from sae_lab.sae.gated import GatedSAE
from sae_lab.sae.jumprelu import JumpReLUSAE
from sae_lab.sae.relu import ReLUSAE
from sae_lab.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {
    cls.name: cls for cls in (ReLUSAE, TopKSAE, BatchTopKSAE, GatedSAE, JumpReLUSAE)
}
