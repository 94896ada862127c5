"""Cold Diffusion deblurring (Bansal et al. 2022, §4.1 and §5.1): cumulative Gaussian blur

    x_k = G_k * x_{k−1},  x_0 = the image,  k = 1 … T,

each G_k a normalised kernel_size² Gaussian of std σ_k applied per channel (depthwise), with
    constant     σ_k = kernel_std
    incremental  σ_k = kernel_std · k
    exponential  σ_k = exp(kernel_std · (k − 1))        (the paper's generation routine).
With to_mean_last_step the last level is replaced by the per-channel mean (the paper's "discrete"
generation option), so only the channel means survive at t = 1 and the prior draws them from a
full-covariance GMM fitted to the training set's channel means (§5.1), plus prior_noise · z.

The surface all Cold operators share (levels, α = 1, σ = noise) is `ColdDegradation`
(degradations/cold.py).

Shapes: x0 (B, C, H, W) in [−1, 1]; t (B,); α, σ (B, 1, 1, 1).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion_lab.degradations.cold import ColdDegradation
from diffusion_lab.priors import GaussianMixturePrior

ROUTINES = {
    "constant": lambda std, k: std,
    "incremental": lambda std, k: std * k,
    "exponential": lambda std, k: math.exp(std * (k - 1)),
}
PADDINGS = ("circular", "reflect")


def gaussian_kernel(size: int, std: float) -> Tensor:
    """Normalised 2-D Gaussian (size, size), the outer product of two 1-D kernels (float32)."""
    x = torch.linspace(-(size // 2), size // 2, size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * (x / std) ** 2)
    k1 = k1 / k1.sum()
    return torch.outer(k1, k1).float()


class ColdBlur(ColdDegradation):
    needs_statistics = True

    def __init__(
        self,
        num_levels: int = 40,
        kernel_size: int = 11,
        kernel_std: float = 0.1,
        blur_routine: str = "incremental",
        padding: str = "circular",
        to_mean_last_step: bool = True,
        noise: float = 0.0,
        prior_noise: float = 0.002,
        prior_components: int = 1,
        prior_seed: int = 0,
    ):
        super().__init__(num_levels, noise)
        if blur_routine not in ROUTINES:
            raise ValueError(
                f"blur_routine must be one of {sorted(ROUTINES)}, got {blur_routine!r}"
            )
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
        if kernel_size < 1 or kernel_size % 2 == 0 or kernel_std <= 0:
            raise ValueError(
                f"kernel_size must be odd and kernel_std > 0, got {kernel_size}, {kernel_std}"
            )
        self.kernel_size, self.padding = int(kernel_size), padding
        self.to_mean_last_step = bool(to_mean_last_step)
        self.prior_noise, self.prior_components = float(prior_noise), int(prior_components)
        self.prior_seed = int(prior_seed)
        stds = [ROUTINES[blur_routine](float(kernel_std), k) for k in range(1, num_levels + 1)]
        kernels = torch.stack([gaussian_kernel(kernel_size, s) for s in stds])  # (T, ks, ks)
        self.register_buffer("kernels", kernels, persistent=False)
        self.gmm = GaussianMixturePrior()

    def setup(self, data_shape, statistics) -> None:
        if self.padding == "reflect" and self.kernel_size // 2 >= min(data_shape[-2:]):
            raise ValueError(
                f"padding=reflect needs kernel_size // 2 < image side; got kernel_size="
                f"{self.kernel_size} for data of shape {tuple(data_shape)}. Use padding=circular."
            )
        if statistics is not None:  # else the prior comes from a checkpoint
            self.gmm.fit(statistics.channel_means, self.prior_components, self.prior_seed)
        if self.padding == "circular":
            self.register_buffer(
                "transfer", self._cumulative_transfer(data_shape[-2:]), persistent=False
            )

    def _cumulative_transfer(self, size) -> Tensor:
        """Circular convolution is diagonal in Fourier space: level k multiplies rfft2(x) by
        Π_{j ≤ k} rfft2(G_j wrapped onto the H×W torus). Returns (T + 1, H, W//2 + 1), level 0 = 1."""
        h, w = size
        pad = self.kernel_size // 2
        offsets = torch.arange(-pad, pad + 1)
        rows, cols = (
            (offsets.view(-1, 1) % h).expand(-1, self.kernel_size),
            (offsets.view(1, -1) % w).expand(self.kernel_size, -1),
        )
        torus = torch.zeros(self.num_levels, h * w, dtype=torch.float64)
        torus.index_add_(1, (rows * w + cols).flatten(), self.kernels.double().flatten(1))
        step = torch.fft.rfft2(torus.view(-1, h, w))
        return torch.cat([torch.ones_like(step[:1]), torch.cumprod(step, 0)]).to(torch.complex64)

    def blur(self, x: Tensor, k: int) -> Tensor:
        """One step G_k * x (k ≥ 1), depthwise with the configured padding."""
        c, pad = x.shape[1], self.kernel_size // 2
        weight = self.kernels[k - 1].to(x).expand(c, 1, -1, -1)
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=self.padding), weight, groups=c)

    def degrade(self, x0: Tensor, t: Tensor) -> Tensor:
        k = self.level(t).to(x0.device)
        if self.padding == "circular" and hasattr(self, "transfer"):  # all levels in one FFT
            spectrum = torch.fft.rfft2(x0.float()) * self.transfer[k].unsqueeze(1).to(x0.device)
            x = torch.fft.irfft2(spectrum, s=x0.shape[-2:])
        else:
            x = x0.clone()
            for j in range(1, int(k.max()) + 1):  # samples still below their level take step j
                idx = torch.nonzero(k >= j).squeeze(1)
                x[idx] = self.blur(x[idx], j)
        if self.to_mean_last_step:
            last = (k == self.num_levels).view(-1, 1, 1, 1)
            x = torch.where(last, x.mean((2, 3), keepdim=True).expand_as(x), x)
        return x

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        """Channel means from the GMM, broadcast over pixels, plus prior_noise · z.

        Exact for to_mean_last_step; otherwise it assumes level T has blurred to near-constant.
        """
        device = device if device is not None else self.kernels.device
        means = self.gmm.sample(shape[0], generator).to(device)
        flat = means.view(shape[0], shape[1], *([1] * (len(shape) - 2))).expand(shape)
        return flat + self.prior_noise * self._randn(shape, device, generator)
