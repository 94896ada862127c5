"""Ancestral sampling (Ho et al. 2020, Alg. 2): x_s ~ q(x_s | x_t, x0 = D(x_t)), per component.

With α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α_{t|s}² σ_s² (Kingma et al. 2021, eq. 33-34):
    μ = (α_{t|s} σ_s² / σ_t²) x_t + (α_s σ²_{t|s} / σ_t²) x̂0,    Var = σ²_{t|s} σ_s² / σ_t².
"""

from diffusion_lab.samplers.common import randn_like, report, state_at, steps


def sample(
    denoiser,
    process,
    x,
    *,
    num_steps,
    grid,
    cond=None,
    generator=None,
    callback=None,
    progress=False,
):
    basis = process.basis
    for i, t, t_next in steps(process, num_steps, grid, x, progress, "ancestral"):
        st, ss = state_at(process, t, x), state_at(process, t_next, x)
        x0 = denoiser(x, st, cond)
        a_ts = st.alpha / ss.alpha
        var_ts = (st.sigma**2 - a_ts**2 * ss.sigma**2).clamp(min=0)
        mean = (a_ts * ss.sigma**2 * basis(x) + ss.alpha * var_ts * basis(x0)) / st.sigma**2
        std = (var_ts * ss.sigma**2 / st.sigma**2).sqrt()
        x = basis.inverse(mean + std * randn_like(mean, generator))
        report(callback, x, i, t, x0)
    return x


sample.requires = ("full_rank_noise",)
