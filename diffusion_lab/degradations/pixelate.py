"""Cold Diffusion super-resolution operator (Bansal et al. 2022, §4.3), non-cumulative:

    x_k = up( down(x0, s_k), (H, W) ),   s_k = round(side · (min_size / min(H, W))^(k/T)),

a box-average (area) downsample to a side shrinking geometrically from the image side at k = 0
(the identity) to min_size at k = T, then `upsample` back ("nearest": pixel blocks, "bicubic":
smooth). At t = 1 only the min_size² coarse pixels survive: the prior draws them from a
full-covariance GMM fitted to the training images' coarsest level and upsamples (plus
prior_noise · z).

Shapes: x0 (B, C, H, W) in [−1, 1]; t (B,); coarse pixels flattened to (B, C·h·w) for the GMM.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion_lab.degradations.cold import ColdDegradation
from diffusion_lab.priors import GaussianMixturePrior

UPSAMPLE_MODES = {"nearest": "nearest-exact", "bicubic": "bicubic"}


class Pixelate(ColdDegradation):
    needs_statistics = True

    def __init__(
        self,
        num_levels: int = 8,
        min_size: int = 4,
        upsample: str = "nearest",
        noise: float = 0.0,
        prior_noise: float = 0.002,
        prior_components: int = 1,
        prior_seed: int = 0,
    ):
        super().__init__(num_levels, noise)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        self.min_size, self.upsample = int(min_size), upsample
        self.prior_noise, self.prior_components = float(prior_noise), int(prior_components)
        self.prior_seed = int(prior_seed)
        self.gmm = GaussianMixturePrior()

    def size(self, k: int, hw: tuple[int, int]) -> tuple[int, int]:
        """Side lengths (h, w) of level k; (H, W) at k = 0, min_size on the short side at k = T."""
        ratio = (self.min_size / min(hw)) ** (k / self.num_levels)
        return tuple(max(1, round(s * ratio)) for s in hw)

    def _up(self, x: Tensor, hw) -> Tensor:
        mode = UPSAMPLE_MODES[self.upsample]
        kwargs = {"align_corners": False} if mode == "bicubic" else {}
        return F.interpolate(x, size=tuple(hw), mode=mode, **kwargs)

    def coarsest(self, x0: Tensor) -> Tensor:
        """The level-T pixels before upsampling, (B, C, h, w)."""
        return F.interpolate(x0, size=self.size(self.num_levels, x0.shape[-2:]), mode="area")

    def setup(self, data_shape, statistics) -> None:
        if self.min_size > min(data_shape[-2:]):
            raise ValueError(
                f"min_size={self.min_size} exceeds the image side of data shape "
                f"{tuple(data_shape)}; choose min_size <= {min(data_shape[-2:])}"
            )
        if statistics is not None:  # else the prior comes from a checkpoint
            coarse = self.coarsest(statistics.images.float()).flatten(1)
            self.gmm.fit(coarse, self.prior_components, self.prior_seed)

    def degrade(self, x0: Tensor, t: Tensor) -> Tensor:
        k, hw = self.level(t).to(x0.device), x0.shape[-2:]
        x = x0.clone()
        for j in k.unique().tolist():
            if j > 0:
                idx = torch.nonzero(k == j).squeeze(1)
                x[idx] = self._up(F.interpolate(x0[idx], size=self.size(j, hw), mode="area"), hw)
        return x

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        """Coarse pixels from the GMM, upsampled to the image size, plus prior_noise · z."""
        device = device if device is not None else self.gmm.weights.device
        h, w = self.size(self.num_levels, shape[-2:])
        coarse = self.gmm.sample(shape[0], generator).to(device).view(shape[0], shape[1], h, w)
        return self._up(coarse, shape[-2:]) + self.prior_noise * self._randn(
            shape, device, generator
        )
