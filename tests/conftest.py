"""Shared fixtures: compose the real Hydra config the way the CLI does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from diffusion_lab.cli import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, keep_hydra: bool = False
):
    """Compose `configs/<config_name>.yaml` with overrides, paths pointing into output_dir
    (keep_hydra: leave the `hydra` node in, to check launcher and sweeper configs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.root_dir = str(output_dir)
        cfg.choices = {
            k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")
        }
        if not keep_hydra:
            del cfg.hydra
    return cfg


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: intra-op threads only add synchronisation cost on a shared CPU. A module
    uses it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides, config_name="train"):
        return compose_config(config_name, list(overrides), tmp_path)

    return make


def run_cli(
    script: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run an entry point the way a user does; returns the finished process (never raises).

    `env` adds or replaces environment variables (e.g. WANDB_MODE) for this one run."""
    env = {
        "OMP_NUM_THREADS": "1",
        **os.environ,
        "DIFFUSION_LAB_ROOT": str(cwd),
        "PYTHONWARNINGS": "ignore",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


ENTRY_POINTS = {
    "train.py": "diffusion_lab.cli.train",
    "sample.py": "diffusion_lab.cli.sample",
    "evaluate.py": "diffusion_lab.cli.evaluate",
    "train_ae.py": "diffusion_lab.cli.train_ae",
    "export.py": "diffusion_lab.cli.export",
}


def run_main(script: str, *args: str, root: Path) -> tuple[int, str, str]:
    """Call an entry point's @hydra.main in this process with sys.argv as a user types it;
    returns (exit status, stdout, stderr). The same code path as `python script args` without
    the ~5 s of interpreter and torch start-up per case (subprocess cases use run_cli)."""
    import contextlib
    import importlib
    import io

    main = importlib.import_module(ENTRY_POINTS[script]).main
    saved_argv, saved_root = sys.argv, os.environ.get("DIFFUSION_LAB_ROOT")
    sys.argv, os.environ["DIFFUSION_LAB_ROOT"] = [script, *args], str(root)
    out, err = io.StringIO(), io.StringIO()
    GlobalHydra.instance().clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                status = 0
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = saved_argv
        if saved_root is None:
            os.environ.pop("DIFFUSION_LAB_ROOT", None)
        else:
            os.environ["DIFFUSION_LAB_ROOT"] = saved_root
        GlobalHydra.instance().clear()
    return status, out.getvalue(), err.getvalue()
