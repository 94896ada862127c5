"""Coarse-to-fine generation (Cascaded Diffusion, Ho et al. 2021): a base model, then
super-resolution stages conditioned on the upsampled previous output.

    lowres.py    LowResCondition: down/upsampling and noise-conditioning augmentation
    concat.py    ConcatCondition: a backbone conditioned by channel concatenation
    pipeline.py  sample_cascade: base -> super-resolution stages, with times and NFE
"""

from diffusion_lab.cascade.concat import ConcatCondition
from diffusion_lab.cascade.lowres import LowResCondition

__all__ = ["ConcatCondition", "LowResCondition"]
