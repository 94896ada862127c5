"""Distillation: a student trained from a teacher checkpoint (python distill.py, docs/distillation.md).

progressive.py   Salimans & Ho 2022: the two-step DDIM target, its weighting, the method
consistency.py   Song et al. 2023: the consistency parameterisation, teacher ODE step, loss
module.py        DistillModule: DiffusionModule with a frozen teacher (and θ⁻)
"""
