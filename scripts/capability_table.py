"""The README's table of which samplers and metrics apply to which degradation, generated from the
same capability flags build.py and the metrics check (process.isotropic / full_rank_noise /
linear / has_prior, each sampler's `requires`, the metrics' skip reasons).

    python scripts/capability_table.py            # print the markdown table
    python scripts/capability_table.py --write    # replace the block in README.md

tests/integration/test_validation.py fails when README.md's block differs from this output.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf, open_dict

from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.data.statistics import load_or_compute
from diffusion_lab.metrics.report import _skip_reason
from diffusion_lab.process import ForwardProcess

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- capability-table:begin -->", "<!-- capability-table:end -->"
FLAGS = ("isotropic", "full_rank_noise", "linear", "has_prior")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def processes(cache_dir: str):
    """(degradation option, its default schedule, ForwardProcess on 16×16 digits) per option."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in options("degradation"):
            cfg = compose("train", [f"degradation={name}"], return_hydra_config=True)
            with open_dict(cfg):
                schedule = cfg.hydra.runtime.choices.schedule
                del cfg.hydra
                cfg.paths = {"cache_dir": cache_dir, "data_dir": cache_dir}
            datamodule = instantiate(cfg.dataset)
            process = ForwardProcess(
                instantiate(cfg.degradation), instantiate(cfg.schedule), datamodule.data_shape
            )
            process.setup(
                load_or_compute(datamodule, cache_dir) if process.needs_statistics else None
            )
            yield name, schedule, process


def sampler_requires() -> dict[str, tuple[str, ...]]:
    """The capability flags each sampler option's function declares (`fn.requires`)."""
    out = {}
    for name in options("sampler"):
        target = OmegaConf.load(Path(CONFIG_DIR) / "sampler" / f"{name}.yaml")["_target_"]
        out[name] = tuple(getattr(get_method(target), "requires", ()))
    return out


def table(cache_dir: str) -> str:
    requires = sampler_requires()
    yes = {True: "✓", False: "·"}
    head = ["degradation", "default schedule", *FLAGS, "samplers", "nll", "vlb"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, schedule, process in processes(cache_dir):
        samplers = [s for s, flags in requires.items() if all(getattr(process, f) for f in flags)]
        metrics = [yes[_skip_reason(process, m) is None] for m in ("nll", "vlb")]
        flags = [yes[bool(getattr(process, f))] for f in FLAGS]
        rows.append(
            "| " + " | ".join([name, schedule, *flags, ", ".join(samplers), *metrics]) + " |"
        )
    return "\n".join(rows)


def readme_block(text: str) -> str | None:
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n?" + re.escape(END), text, re.S)
    return match.group(1) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = table(tmp)
    if not args.write:
        print(generated)
        return
    text = README.read_text()
    if readme_block(text) is None:
        sys.exit(f"README.md has no {BEGIN} ... {END} block to replace")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + generated + "\n" + text[end:])
    print(f"updated {README}")


if __name__ == "__main__":
    main()
