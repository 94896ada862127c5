"""Checkpoint size, restore time and sample.py start-up, per corruption (issue 15's figures).

    python scripts/bench_checkpoints.py [--root DIR] [--out DIR] [--repeats 4]

For each case it trains 2 steps on digits (the default config plus the case's overrides), then
reports the size of last.ckpt, the median in-process `module_from_checkpoint` time and the median
wall time of `python sample.py ckpt_path=... num_samples=1 num_steps=1`. `--root` runs another
checkout's entry points (e.g. a `git worktree` of an older commit) with this venv, so two
versions are compared on the same machine: run it once per root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "gaussian": [],
    "gud_pca": ["degradation=gud", "basis=pca", "degradation.order=variance"],
    "pixelate": ["degradation=pixelate"],
    "blur_w2": ["degradation=blur_noise", "schedule=blur_w2"],
}
TRAIN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "evaluation.metrics=[]"]

# Runs inside `root` (its own diffusion_lab first on sys.path), whichever module holds the loader.
LOAD_TIMER = """
import json, statistics, sys, time
sys.path.insert(0, ".")
try:
    from diffusion_lab.build import module_from_checkpoint
except ImportError:  # checkouts before issue 15
    from diffusion_lab.checkpoint import module_from_checkpoint
times = []
for _ in range({repeats}):
    start = time.perf_counter()
    module_from_checkpoint({ckpt!r})
    times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""


def run(cmd: list[str], root: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(
        cmd, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose code runs")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_checkpoints")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    root, py = args.root.resolve(), sys.executable
    out = args.out / root.name
    rows = []
    for name, overrides in CASES.items():
        run_dir = out / name
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            run([py, "train.py", *overrides, *TRAIN, f"hydra.run.dir={run_dir}"], root)
        timer = LOAD_TIMER.format(repeats=args.repeats, ckpt=str(ckpt))
        load = subprocess.run(
            [py, "-c", timer], cwd=root, check=True, capture_output=True, text=True
        ).stdout.split()[-1]
        sample = [
            run(
                [
                    py,
                    "sample.py",
                    f"ckpt_path={ckpt}",
                    "num_samples=1",
                    "num_steps=1",
                    f"hydra.run.dir={out / f'{name}_sample{i}'}",
                ],
                root,
            )  # fmt: skip
            for i in range(args.repeats)
        ]
        rows.append(
            {
                "case": name,
                "checkpoint_mb": ckpt.stat().st_size / 1e6,
                "restore_s": float(json.loads(load)),
                "sample_py_s": statistics.median(sample),
            }
        )
        r = rows[-1]
        print(
            f"{root.name} {name:9s} checkpoint {r['checkpoint_mb']:.2f} MB, restore "
            f"{r['restore_s']:.3f} s, sample.py {r['sample_py_s']:.2f} s (medians)",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
