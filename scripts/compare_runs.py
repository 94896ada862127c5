"""Compare train.py runs without W&B: a markdown table and two plots from their results.json.

    python scripts/compare_runs.py DIR [DIR ...] [--out OUT] [--metrics k1,k2]

DIR is a Hydra multirun directory (outputs/train/multirun_<time>/), a single run directory, or any
folder above them; every results.json below it is read. Writes into OUT (default: the first DIR)
  comparison.md     one row per train.py run, sorted by the first metric column (ascending)
  loss_curves.png   val/loss_ema (solid) and smoothed train/loss (dashed) against step
  metric_vs_nfe.png FID/KID against NFE for every evaluate.py results.json found
and prints the markdown. `--metrics a,b` sets the metric columns; `--metrics +a,b` adds to the
defaults (val/loss_ema, test/loss_ema, fid_/kid_/is_/bpd_ evaluation keys, global_step,
fit_seconds, train_images_per_s, sampling/nfe). Run directories without results.json (crashed or
still running) and unreadable results.json files are reported, not fatal. Exit status 2: nothing.
"""

import argparse
import csv
import json
import math
import sys
from itertools import accumulate
from pathlib import Path

import yaml

from diffusion_lab.metrics.names import metric_of

NOT_SHOWN = ("_std", "_sem", "_nfe", "_seconds", "_t_min")
TAIL = ["global_step", "fit_seconds", "train_images_per_s", "sampling/nfe"]


def overrides(run: Path) -> list[str]:
    try:
        return [str(o) for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())]
    except (OSError, yaml.YAMLError, TypeError):
        return []


def flat(res: dict) -> dict:
    """Every number a train results.json holds, under the names the table columns use."""
    out = {k: v for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out.update(res.get("metrics") or {})
    out.update(res.get("evaluation") or {})
    out.update({f"sampling/{k}": v for k, v in (res.get("sampling") or {}).items()})
    return {k: v for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def fmt(v) -> str:
    if v is None:
        return "—"
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def sort_key(v):
    return (v is None or (isinstance(v, float) and math.isnan(v)), v if v is not None else 0)


def find(dirs: list[Path]):
    """(train runs, evaluate.py results, run dirs without results.json, unreadable files)."""
    runs, evals, bad, seen = [], [], [], set()
    files = sorted({p.resolve() for d in dirs for p in d.rglob("results.json")})
    for path in files:
        seen.add(path.parent)
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            bad.append(f"{path} ({type(err).__name__}: {err})")
            continue
        if isinstance(res, dict) and "samplers" in res:
            evals.append((path.parent, res))
        elif isinstance(res, dict) and "metrics" in res and "choices" in res:
            runs.append({"dir": path.parent, "res": res, "overrides": overrides(path.parent)})
        else:
            bad.append(f"{path} (not a train.py or evaluate.py results.json)")
    hydra = {p.parent.resolve() for d in dirs for p in d.rglob(".hydra") if p.is_dir()}
    return runs, evals, sorted(hydra - seen), bad


def label_runs(runs: list[dict]) -> list[str]:
    """Label = the run's own overrides, less those every run shares; unique; else the dir name."""
    common = set.intersection(*(set(r["overrides"]) for r in runs)) if len(runs) > 1 else set()
    for r in runs:
        r["label"] = " ".join(o for o in r["overrides"] if o not in common) or r["dir"].name
    labels = [r["label"] for r in runs]
    for r in runs:
        if labels.count(r["label"]) > 1:
            r["label"] += f" ({r['dir'].parent.name}/{r['dir'].name})"
    return sorted(o for o in common)


def table(runs: list[dict], metric_arg: str | None) -> tuple[list[str], list[list[str]]]:
    for r in runs:
        r["flat"] = flat(r["res"])
    evaluation = [k for r in runs for k in (r["res"].get("evaluation") or {})]
    default = ["val/loss_ema", "test/loss_ema"]
    default += [k for k in dict.fromkeys(evaluation) if metric_of(k) is not None]
    default = [k for k in default if not k.endswith(NOT_SHOWN)] + TAIL
    metrics = default
    if metric_arg:
        asked = [k.strip() for k in metric_arg.lstrip("+").split(",") if k.strip()]
        metrics = (
            default + [k for k in asked if k not in default] if metric_arg[0] == "+" else asked
        )
    for r in runs:
        r["choices"] = r["res"].get("choices") or {}
    choices = list(dict.fromkeys(k for r in runs for k in r["choices"]))
    varying = [c for c in choices if len({str(r["choices"].get(c)) for r in runs}) > 1]
    runs.sort(key=lambda r: sort_key(r["flat"].get(metrics[0])) if metrics else 0)
    header = ["run", *varying, *metrics]
    rows = [
        [r["label"], *(str(r["choices"].get(c, "—")) for c in varying)]
        + [fmt(r["flat"].get(m)) for m in metrics]
        for r in runs
    ]
    return header, rows


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    files = sorted((run / "logs").rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    curves: dict[str, list[tuple[int, float]]] = {"val/loss_ema": [], "train/loss": []}
    if files:
        with open(files[-1], newline="") as f:
            for row in csv.DictReader(f):
                for key, pts in curves.items():
                    if row.get(key) not in (None, "") and row.get("step") not in (None, ""):
                        pts.append((int(float(row["step"])), float(row[key])))
    return curves


def plot_losses(runs: list[dict], path: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for i, r in enumerate(runs):
        curves = read_curves(r["dir"])
        if not any(curves.values()):
            continue
        color, drawn = f"C{i % 10}", drawn + 1
        if curves["train/loss"]:
            steps, ys = zip(*curves["train/loss"])
            smooth = list(accumulate(ys, lambda s, y: 0.9 * s + 0.1 * y))  # EMA, as TensorBoard
            ax.plot(steps, smooth, "--", color=color, alpha=0.4, lw=1)
        if curves["val/loss_ema"]:
            ax.plot(*zip(*curves["val/loss_ema"]), "-o", color=color, ms=3, label=r["label"])
    if drawn:
        ax.set(xlabel="step", ylabel="loss", title="val/loss_ema (—), train/loss smoothed (--)")
        ax.set_yscale(
            "log" if all(y > 0 for line in ax.lines for y in line.get_ydata()) else "linear"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def nfe_rows(evals: list[tuple[Path, dict]], runs: list[dict]) -> tuple[str | None, list[dict]]:
    """evaluate.py sampler rows, relabelled '<run> · <sampler>', holding the first FID/KID key."""
    keys = [k for _, res in evals for s in res["samplers"] for k in s.get("metrics", {})]
    keys = [k for k in keys if k.startswith(("fid_", "kid_")) and not k.endswith("_std")]
    key = next((k for k in keys if k.startswith("fid_")), keys[0] if keys else None)
    rows = []
    for eval_dir, res in evals:
        label = eval_dir.name
        if res.get("ckpt_path"):  # <run>/checkpoints/last.ckpt: name the run that trained it
            ckpt_run = Path(res["ckpt_path"]).parent.parent
            tail = ckpt_run.parts[-2:]
            match = [r for r in runs if r["dir"].parts[-len(tail) :] == tail]
            label = match[0]["label"] if match else " ".join(overrides(ckpt_run)) or ckpt_run.name
        for s in res["samplers"]:
            if key in s.get("metrics", {}) and s.get("nfe"):
                name = f"{label} · {s['sampler']}"
                rows.append(
                    {"sampler": name, "nfe": s.get("nfe"), "metrics": {key: s["metrics"][key]}}
                )
    return key, rows


def report(dirs: list[Path], out: Path, metric_arg: str | None) -> str | None:
    """Write the plots into `out` and return the markdown; None when no results.json is found."""
    runs, evals, incomplete, bad = find([d for d in dirs if d.is_dir()])
    where = " ".join(str(d) for d in dirs)
    if not (runs or evals or bad):
        msg = f"no results.json under {where}: is this a train.py run or multirun directory?"
        print(
            "\n  ".join([msg, *(f"incomplete (no results.json): {r}" for r in incomplete)]),
            file=sys.stderr,
        )
        return None
    out.mkdir(parents=True, exist_ok=True)
    common = label_runs(runs) if runs else []
    lines = ["# Run comparison", ""]
    lines.append(f"{len(runs)} completed runs found under {where}; ")
    lines[-1] += f"{len(incomplete)} failed/incomplete, {len(bad)} skipped."
    lines += [
        f"- failed/incomplete (no results.json): {p} `{' '.join(overrides(p))}`" for p in incomplete
    ]
    lines += [f"- skipped unreadable results.json: {b}" for b in bad]
    if common:
        lines.append(f"\nShared by every run: `{' '.join(common)}`")
    if runs:
        header, rows = table(runs, metric_arg)
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        drawn = plot_losses(runs, out / "loss_curves.png")
        lines.append(f"\n![loss curves](loss_curves.png) ({drawn} runs with logs/metrics.csv)")
        if not drawn:
            lines[-1] = "\nloss_curves.png not drawn: no run has logs/metrics.csv"
    key, rows = nfe_rows(evals, runs)
    if rows:
        from diffusion_lab.visualize import plot_metric_vs_nfe

        plot_metric_vs_nfe(rows, out / "metric_vs_nfe.png")
        curves = ", ".join(dict.fromkeys(f"`{r['sampler']}`" for r in rows))
        lines.append(f"\n![{key} vs NFE](metric_vs_nfe.png) {key} against NFE: {curves}")
    else:
        lines.append("\nmetric_vs_nfe.png not drawn: no evaluate.py results.json with FID/KID")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    parser.add_argument("--out", type=Path, help="where the report goes (default: the first DIR)")
    parser.add_argument("--metrics", help="metric columns k1,k2 (or +k1,k2 to add to defaults)")
    args = parser.parse_args(argv)
    out = args.out or args.dirs[0]
    text = report(args.dirs, out, args.metrics)
    if text is None:
        return 2
    (out / "comparison.md").write_text(text)
    print(text + f"\nwritten: {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
