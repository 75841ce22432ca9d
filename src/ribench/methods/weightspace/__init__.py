"""Weight-space adaptation methods: interpolation, soups, merging, dynamic interpolation.

All of them combine models fine-tuned by ``ft`` (``requires = ("ft",)``) with the
pretrained model m0 in weight space; none trains the network's weights itself.

- ``interpolation``: ``wise_ft`` (Wortsman et al., CVPR 2022);
- ``soups``: ``soup_uniform``, ``soup_greedy`` (Wortsman et al., ICML 2022);
- ``merging``: ``task_arithmetic`` (Ilharco et al., ICLR 2023), ``ties`` (Yadav et al.,
  NeurIPS 2023), ``fisher_merge`` (Matena & Raffel, NeurIPS 2022), ``atlas`` (Zhang et
  al., NeurIPS 2024);
- ``dawin``: ``dawin`` (Oh et al., ICLR 2025) and its model, registered as ``dawin``;
- ``common``: the state-dict arithmetic and scoring they share.

Task vectors come from ``ribench.methods.task_vectors`` (float64 deltas); the merged
weights are cast back to each entry's dtype. Candidate weights are scored through
``torch.func.functional_call`` on one module, never by copying models. Weight-space
methods record ``trainable_params`` = the parameters of the fine-tuned models they
combine (what fine-tuning trained). Importing this package registers every one.
"""

from . import dawin, interpolation, merging, soups  # noqa: F401  (registration)
from .dawin import DAWIN_EXPERTISE, DaWin, DaWinConfig, DaWinModel, dawin_coefficients, dawin_model
from .interpolation import WiSEFT, WiSEFTConfig, interpolate
from .merging import (Atlas, AtlasConfig, FisherConfig, FisherMerge, TaskArithmetic, TaskArithmeticConfig,
                      TIESConfig, TIESMerging, atlas_state, task_arithmetic_state)
from .soups import GreedySoup, SoupConfig, UniformSoup

__all__ = [
    "DAWIN_EXPERTISE", "Atlas", "AtlasConfig", "DaWin", "DaWinConfig", "DaWinModel", "FisherConfig", "FisherMerge",
    "GreedySoup", "SoupConfig", "TIESConfig", "TIESMerging", "TaskArithmetic", "TaskArithmeticConfig", "UniformSoup",
    "WiSEFT", "WiSEFTConfig", "atlas_state", "dawin_coefficients", "dawin_model", "interpolate",
    "task_arithmetic_state",
]
