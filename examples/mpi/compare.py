#!/usr/bin/env python3
"""Compares the results of examples/mpi/train_dp.py runs bit for bit with the reference.

    compare.py REF.npz LABEL=RUN.npz[:RANKS] ... [--expect-different LABEL=RUN.npz ...]

Each run must have the reference's parameters and Lookahead slow weights bit for bit (and its
applied / skipped counts), and, if RANKS is given, must have run on that many ranks. Runs after
--expect-different are only reported (bit-identical or not): they are the MPI_Allreduce
variant, whose result depends on the rank count. Exit status 1 if any required run differs.
"""

import sys

import numpy as np


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def diff(a, b):
    """(number of differing elements, max abs difference) of two float32 arrays, by bits."""
    if a.shape != b.shape:
        return -1, float("inf")
    ne = a.view(np.uint32) != b.view(np.uint32)
    n = int(ne.sum())
    return n, float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if n else 0.0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    ref = load(argv[0])
    failures = 0
    informational = False
    print(f"{'run':<28} {'ranks':>5} {'params':>22} {'slow weights':>22}  counts")
    for arg in argv[1:]:
        if arg == "--expect-different":
            informational = True
            continue
        label, _, rest = arg.partition("=")
        path, _, want_ranks = rest.partition(":")
        run = load(path)
        dp = diff(ref["params"], run["params"])
        ds = diff(ref["slow"], run["slow"])
        counts_ok = (
            int(run["step_count"]) == int(ref["step_count"])
            and int(run["skipped"]) == int(ref["skipped"])
        )
        ranks_ok = not want_ranks or int(run["ranks"]) == int(want_ranks)
        same = dp[0] == 0 and ds[0] == 0

        def show(d):
            return "bit-identical" if d[0] == 0 else f"{d[0]} differ (max {d[1]:.1e})"

        verdict = ""
        if not informational:
            ok = same and counts_ok and ranks_ok
            failures += not ok
            verdict = "  ok" if ok else "  FAILED"
            if not ranks_ok:
                verdict += f" (ran on {int(run['ranks'])} ranks, expected {want_ranks})"
        else:
            verdict = "  (informational)"
        print(
            f"{label:<28} {int(run['ranks']):>5} {show(dp):>22} {show(ds):>22}  "
            f"{int(run['step_count'])} applied, {int(run['skipped'])} skipped{verdict}"
        )
    if failures:
        print(f"compare: FAILED: {failures} run(s) differ from the single-process reference")
        return 1
    print("compare: every sharded run is bit-identical to the single-process reference")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
