"""The latent-diffusion first stage: a KL-regularised autoencoder (Rombach et al. 2022), its
training module, optional patch discriminator, checkpoint loader and reconstruction metrics.

    kl.py              KLAutoencoder, DiagonalGaussian (the posterior q(z|x))
    discriminator.py   PatchGAN discriminator + hinge loss (optional, off by default)
    module.py          AutoencoderModule (LightningModule): reconstruction + KL (+ adversarial)
    load.py            load_autoencoder(path) -> (model, stored config), through the allowlist
    reconstruction.py  PSNR, SSIM, rFID, latent shape and compression of a trained autoencoder
"""

from diffusion_lab.autoencoder.kl import DiagonalGaussian, KLAutoencoder

__all__ = ["DiagonalGaussian", "KLAutoencoder"]
