"""`python distill.py ckpt_path=TEACHER [distill=progressive|consistency] [distill.KEY=VALUE ...]`.

Trains a student from a teacher checkpoint (its EMA weights, frozen, in eval mode), round by round
(progressive distillation halves the DDIM steps each round; consistency distillation is one round).
The student's model config (data, process, network, preconditioning) is the teacher's; `optim`,
`ema`, `trainer`, `callbacks` and `logger` are this command's. Each round k writes

    <run dir>/round<k>_<N>steps/checkpoints/last.ckpt   a training checkpoint whose stored config
                                                         samples with the student's sampler and N
    <run dir>/round<k>_<N>steps/samples/samples.png      N-step samples of the round's EMA weights

so `python sample.py ckpt_path=<round ckpt>` and `python evaluate.py ckpt_path=<round ckpt>` work as
for any run. Resume: rerunning the same command with the same hydra.run.dir skips finished rounds
and resumes an interrupted one from its last.ckpt exactly (Lightning restores weights, EMA,
optimizer and step; t and noise are functions of the step; θ⁻ travels in the checkpoint).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from diffusion_lab.build import (
    Parts,
    _instantiate,
    build_module,
    check_sampler,
    choice,
    module_from_checkpoint,
)
from diffusion_lab.checkpoint import load_checkpoint
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import (
    record_choices,
    sample_and_save,
    terminate_on_sigterm,
    user_errors,
)
from diffusion_lab.distill.module import ROUND_KEY, DistillModule
from diffusion_lab.precond import EDMPrecond
from diffusion_lab.results import versions, write_json
from diffusion_lab.values import TRAIN_KEYS, ConfigError, check_values

DISTILL_KEYS = (
    *TRAIN_KEYS,
    ("distill.steps_per_round", "count"),
    ("distill.rounds", "count"),
)
# What a student takes from this command rather than from the teacher's run.
STUDENT_KEYS = ("seed", "optim", "ema", "trainer", "callbacks", "logger", "evaluation", "paths")
STUDENT_KEYS += ("val_num_t", "num_samples")


def check_teacher(cfg: DictConfig, method, teacher, process, teacher_cfg, path) -> None:
    """The teacher fits the method: DDIM halving and the consistency ODE need one α, σ per sample."""
    name = choice(cfg, "distill")
    if not (process.linear and process.isotropic):
        raise ConfigError(
            f"{name} needs a linear isotropic degradation (one α, σ per sample); the teacher "
            f"{path} has {choice(teacher_cfg, 'degradation')}. Distil a gaussian or "
            "gaussian_ve teacher."
        )
    if method.needs_edm_teacher:
        if not isinstance(teacher.precond, EDMPrecond):
            raise ConfigError(
                f"{name} starts F_θ from the teacher's EDM-preconditioned network; the teacher "
                f"{path} has {choice(teacher_cfg, 'precond')}. Use a precond=edm teacher."
            )
        if not process.schedule.has_logsnr:
            raise ConfigError(
                f"{name} spaces its Karras grid by σ/α and needs a log-SNR schedule; the "
                f"teacher {path} has {choice(teacher_cfg, 'schedule')}."
            )


def student_config(cfg, teacher_cfg, method, k: int, teacher_path, round_dir: Path) -> DictConfig:
    """The teacher run's config with this command's training keys, the student's sampler (and
    preconditioning) and the round record `distill_round`: what the round checkpoint stores."""
    here = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    here.paths.output_dir = str(round_dir)
    here = OmegaConf.create(OmegaConf.to_container(here, resolve=True))
    student = OmegaConf.create(OmegaConf.to_container(teacher_cfg, resolve=True))
    with open_dict(student):
        for key in STUDENT_KEYS:
            if key in here:
                student[key] = here[key]
        student.trainer.max_steps = method.steps_per_round
        student.seed = int(cfg.seed) + k  # each round draws its own t and noise
        if cfg.get("batch_size") is not None:
            student.dataset.batch_size = cfg.batch_size
        student.sampler = method.sampler_config(k)
        precond = method.precond_config(OmegaConf.select(teacher_cfg, "precond.sigma_data"))
        choices = dict(teacher_cfg.get("choices") or {})
        choices.update({"sampler": method.sampler_choice, "distill": method.name})
        if precond is not None:
            student.precond = precond
            choices["precond"] = method.name
        student.choices = choices
        student.distill = here.distill
        student.distill_round = {
            "index": k,
            "num_steps": method.student_steps(k),
            "teacher_ckpt": str(Path(teacher_path).resolve()),
        }
    return student


def _resumable(last: Path, student_cfg: DictConfig) -> bool:
    """Whether `last` is this round's own interrupted or finished state (else: a clear error)."""
    if not last.is_file():
        return False
    saved, _, _ = load_checkpoint(last)
    ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    mine = OmegaConf.to_container(student_cfg.distill_round)
    theirs = OmegaConf.to_container(saved.get("distill_round") or {})
    same = theirs == mine and ckpt.get(ROUND_KEY) == mine["index"]
    same = same and saved.distill._target_ == student_cfg.distill._target_
    if not same:
        raise ConfigError(
            f"{last} holds another distillation (round {theirs}, this run wants {mine}): rerun "
            "with the overrides that run used, or pass a new hydra.run.dir"
        )
    return True


def run_round(cfg: DictConfig, method, k: int, teacher_path: Path, out: Path) -> dict:
    """Round k: student N_k from teacher `teacher_path`; returns the round's facts."""
    teacher_module, parts, teacher_cfg = module_from_checkpoint(teacher_path, paths=cfg.paths)
    teacher = teacher_module.ema
    check_teacher(cfg, method, teacher, parts.process, teacher_cfg, teacher_path)
    num_steps = method.student_steps(k)
    round_dir = out / f"round{k}_{num_steps}steps"
    student_cfg = student_config(cfg, teacher_cfg, method, k, teacher_path, round_dir)
    last = round_dir / "checkpoints" / "last.ckpt"
    resume = _resumable(last, student_cfg) and cfg.get("auto_resume", True)
    step = 0
    facts = {
        "round": k,
        "num_steps": num_steps,
        "teacher": str(teacher_path),
        "checkpoint": str(last),
    }
    if resume:
        step = int(
            torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        )
        if step >= method.steps_per_round:
            print(f"round {k} ({num_steps} steps): done at step {step}, {last}")
            done = round_dir / "results.json"
            earlier = json.loads(done.read_text()) if done.is_file() else {}
            return {**facts, "fit_seconds": None, **earlier, "global_step": step, "skipped": True}
        print(f"round {k} ({num_steps} steps): resuming from {last} at step {step}")

    pl.seed_everything(cfg.seed + k, workers=True)
    student = copy.deepcopy(teacher).requires_grad_(True).train()  # starts as the teacher
    if student_cfg.precond._target_ != teacher_cfg.precond._target_:
        student.precond = _instantiate(student_cfg, "precond")
    sampler = _instantiate(student_cfg, "sampler")
    check_sampler(student_cfg, sampler, parts.process)
    datamodule = _instantiate(student_cfg, "dataset")
    module = build_module(
        student_cfg,
        Parts(datamodule, parts.process, student, parts.objective, sampler),
        module_class=DistillModule,
        method=method,
        teacher=teacher,
        round_index=k,
        num_steps=num_steps,
    )
    callbacks = [instantiate(c) for c in student_cfg.callbacks.values() if c is not None]
    loggers = [instantiate(lg) for lg in student_cfg.logger.values() if lg is not None]
    trainer = instantiate(student_cfg.trainer, callbacks=callbacks, logger=loggers or False)
    start = time.perf_counter()
    trainer.fit(
        module, datamodule=datamodule, ckpt_path=last if resume else None, weights_only=True
    )
    fit_seconds = time.perf_counter() - start
    with terminate_on_sigterm(f"round {k} finished ({last}); rerun to go on"):
        grid = sample_and_save(module, cfg.num_samples, cfg.seed, round_dir / "samples")
    facts.update(global_step=trainer.global_step, fit_seconds=fit_seconds, samples=grid)
    facts["resumed_from_step"] = step if resume else None
    write_json(round_dir / "results.json", facts)
    return facts


def distill(cfg: DictConfig) -> dict:
    """All rounds of `cfg.distill`; writes results.json in the run directory and returns it."""
    check_values(cfg, DISTILL_KEYS)
    if cfg.get("batch_size") is not None:  # null: the teacher run's dataset.batch_size
        check_values(cfg, (("batch_size", "count"),))
    if cfg.get("ckpt_path") in (None, "", "???"):
        raise ConfigError("ckpt_path (the teacher) is required: pass ckpt_path=.../last.ckpt")
    method = _instantiate(cfg, "distill")
    out = Path(cfg.paths.output_dir)
    teacher_path, rounds = Path(cfg.ckpt_path), []
    for k in range(method.rounds):
        rounds.append(run_round(cfg, method, k, teacher_path, out))
        teacher_path = Path(rounds[-1]["checkpoint"])
    results = {
        "method": method.name,
        "teacher": str(cfg.ckpt_path),
        "rounds": rounds,
        "distill": OmegaConf.to_container(cfg.distill, resolve=True),
        "versions": versions(),
    }
    write_json(out / "results.json", results)
    print(f"\nrun directory: {out}")
    for r in rounds:
        print(f"  round {r['round']}: {r['num_steps']} steps, {r['checkpoint']}")
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="distill")
def main(cfg: DictConfig) -> None:
    record_choices(cfg)
    with user_errors():
        distill(cfg)


if __name__ == "__main__":
    main()
