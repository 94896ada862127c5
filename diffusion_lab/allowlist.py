"""The `_target_`s a stored config may name: a checkpoint's config is untrusted input (DESIGN §4).

Hydra's `instantiate` imports and calls whatever `_target_` names, so a crafted checkpoint whose
stored config says `dataset: {_target_: pathlib.Path.touch, ...}` would run that call on load.
Before anything from a stored config is instantiated, `check_stored_config` walks it as plain data
(no import, no call, no interpolation resolved) and accepts it only if

- every value is plain data (dict, list, str, int, float, bool, None) and no string holds an
  OmegaConf interpolation `${...}` (stored configs are resolved; a resolver such as `oc.decode`
  could otherwise build a `_target_` the walk never saw);
- every `_target_`, wherever it sits (nested nodes, `_args_` lists, `_partial_` nodes), is one that
  this project's own config tree (configs/) names *for that group*: the group is the top-level key
  (`dataset`, `sampler`, `optim`, ...), and the targets of a group are those its YAML files set,
  those `@package _global_` files set under that key, and those of any group a YAML interpolates
  into it (`degradation.basis: ${basis}`). `EXTRA_TARGETS` adds the documented alternatives that
  no YAML spells out (the CLIP encoder, the optimizers of torch.optim this project supports).

A researcher's own config (configs/backbone/mine.yaml with `_target_: mypkg.MyNet`) is allowed on
their machine because it is in their config tree; a checkpoint naming it elsewhere is refused with
a line that says which group, which target and where to add it if the file is trusted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import yaml

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"

# Documented alternatives set on the command line rather than in a YAML file (group -> targets).
EXTRA_TARGETS: dict[str, tuple[str, ...]] = {
    # configs/backbone/unet_xattn.yaml: backbone.encoder._target_=diffusion_lab.encoders.CLIPTextEncoder
    "backbone": (
        "diffusion_lab.encoders.CLIPTextEncoder",
        "diffusion_lab.encoders.clip.CLIPTextEncoder",
    ),
    # optim.optimizer: the first-order optimizers of torch.optim (same keyword surface as AdamW)
    "optim": tuple(
        f"torch.optim.{name}" for name in ("Adam", "AdamW", "SGD", "RAdam", "NAdam", "Adamax")
    ),
}

# Targets renamed since checkpoints were first written (old -> new; issue 15): `rename_targets` maps a stored
# config onto today's names before it is checked, so older checkpoints keep loading.
RENAMED_TARGETS: dict[str, str] = {
    "diffusion_lab.samplers.ancestral.sample": "diffusion_lab.samplers.ancestral.ancestral",
    "diffusion_lab.samplers.ddim.sample": "diffusion_lab.samplers.ddim.ddim",
    "diffusion_lab.samplers.sde.euler_maruyama": "diffusion_lab.samplers.sde.sde",
    "diffusion_lab.samplers.momentum.naive": "diffusion_lab.samplers.momentum.soft_naive",
    "diffusion_lab.samplers.cold.naive": "diffusion_lab.samplers.cold.cold_naive",
    "diffusion_lab.samplers.cold.improved": "diffusion_lab.samplers.cold.cold",
    "diffusion_lab.schedules.EDM": "diffusion_lab.schedules.EDMSchedule",
    "diffusion_lab.precond.EDM": "diffusion_lab.precond.EDMPrecond",
    "diffusion_lab.objectives.weighting.EDM": "diffusion_lab.objectives.weighting.EDMWeighting",
    "diffusion_lab.objectives.weighting.Uniform": "diffusion_lab.objectives.weighting.UniformWeighting",
    "diffusion_lab.objectives.time.Uniform": "diffusion_lab.objectives.time.UniformTime",
}

_INTERPOLATION = re.compile(r"^\$\{(\w+)\}$")  # a whole group interpolated: `${basis}`
_PLAIN = (str, int, float, bool, type(None))


class ForeignTargetError(ValueError):
    """A stored config names something this project's configs do not define, or is not plain data."""


def _package(text: str, group: str) -> str | None:
    """The package a YAML file's content lands in: its group, or None for `@package _global_`."""
    for line in text.splitlines()[:5]:
        match = re.match(r"#\s*@package\s+(\S+)", line)
        if match:
            return None if match.group(1) == "_global_" else match.group(1).split(".")[0]
    return group


def _walk_yaml(node, group: str, targets: dict, aliases: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                targets[group].add(value)
            elif isinstance(value, str) and (m := _INTERPOLATION.match(value.strip())):
                aliases[group].add(m.group(1))
            else:
                _walk_yaml(value, group, targets, aliases)
    elif isinstance(node, list):
        for item in node:
            _walk_yaml(item, group, targets, aliases)


@lru_cache(maxsize=4)
def allowed_targets(config_root: Path = CONFIG_ROOT) -> dict[str, frozenset[str]]:
    """{group: the `_target_`s the config tree under `config_root` defines for it}."""
    targets: dict[str, set[str]] = defaultdict(set)
    aliases: dict[str, set[str]] = defaultdict(set)
    for path in sorted(config_root.rglob("*.yaml")):
        parts = path.relative_to(config_root).parts
        if len(parts) == 1 or parts[0] == "hydra":  # primary configs; Hydra's own settings
            continue
        text = path.read_text()
        data = yaml.safe_load(text)
        package = _package(text, parts[0])
        if package is None:  # `@package _global_`: each top-level key is a group
            for key, value in (data or {}).items():
                if key != "defaults":
                    _walk_yaml({key: value}, key, targets, aliases)
        else:
            _walk_yaml(data, package, targets, aliases)
    for group, extra in EXTRA_TARGETS.items():
        targets[group].update(extra)
    allowed = {}
    for group in set(targets) | set(aliases):
        allowed[group] = set(targets[group])
        for other in aliases[group]:
            allowed[group] |= targets[other]
    return {group: frozenset(found) for group, found in allowed.items()}


def check_stored_config(config, config_root: Path = CONFIG_ROOT) -> None:
    """Raise ForeignTargetError unless `config` (plain data) names only this project's targets."""
    if not isinstance(config, dict) or not config:
        raise ForeignTargetError("the stored config is empty or not a mapping")
    allowed = allowed_targets(config_root)

    def visit(node, where: str, group: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise ForeignTargetError(f"{where} has a non-string key {key!r}")
                here = f"{where}.{key}" if where else key
                if key == "_target_":
                    if not isinstance(value, str):
                        raise ForeignTargetError(f"{here} is not a dotted name: {value!r}")
                    if value not in allowed.get(group, ()):
                        raise ForeignTargetError(
                            f"{here}={value} is not a target this project's configs define for "
                            f"group `{group}`; refusing to import it. If you trust this file, "
                            f"add a config naming it under configs/{group}/."
                        )
                visit(value, here, group or key)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, f"{where}[{i}]", group)
        elif not isinstance(node, _PLAIN):
            raise ForeignTargetError(f"{where} holds a {type(node).__name__}, not plain data")
        elif isinstance(node, str) and "${" in node:
            raise ForeignTargetError(
                f"{where}={node!r} is an interpolation; stored configs are resolved plain data"
            )

    visit(config, "", "")


def rename_targets(node):
    """A copy of the plain-data config `node` with every renamed `_target_` (RENAMED_TARGETS)
    replaced by today's name; everything else, foreign or not, is left for the check."""
    if isinstance(node, dict):
        return {
            k: RENAMED_TARGETS.get(v, v)
            if k == "_target_" and isinstance(v, str)
            else rename_targets(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rename_targets(v) for v in node]
    return node
