"""The long crash run: the crash test's engine killed at hundreds of seeded random moments.

    .venv/bin/python bench/recovery.py [--kill-points 200] [--first-seed 1]

Prints, per seed, the kills made, attempts dispatched again after their outcome was recorded (must
be 0) and whether the final results equal the uninterrupted reference run; exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "recovery"))

from test_crash import crash_until_done, run_to_end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-points", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reference = run_to_end(root / "ref" / "data", root / "ref.json", root / "ref.log")
        total = bad = 0
        seed = args.first_seed - 1
        started = time.monotonic()
        while total < args.kill_points:
            seed += 1
            kills, violations, final = crash_until_done(seed, root / f"seed{seed}")
            total += kills
            ok = not violations and final == reference
            bad += not ok
            print(
                f"seed {seed:4d}: {kills} kills, {len(violations)} re-dispatched recorded attempts, "
                f"{'results equal' if final == reference else 'RESULTS DIFFER'}  [{total} kill points]",
                flush=True,
            )
        print(
            f"{total} kill points over {seed - args.first_seed + 1} seeds in "
            f"{time.monotonic() - started:.0f} s: {bad} seed(s) with a loss or a second dispatch"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
