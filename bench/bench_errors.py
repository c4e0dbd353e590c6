"""Where runs go wrong: the misclassified test recordings of one or more runs, summed up.

    python bench/bench_errors.py runs/splits-seed{1,2,3,4,5,1234}-head-default \
        runs/splits-seed{1,2,3,4,5,1234}-birdnet-zero-shot [--list]

For each run (``birdcore.analysis.scores.top1_errors`` on its scores.npz): test recordings, top-1 errors,
how many of those predict a species the recordist named as a background species, and how many
fall on species BirdNET has no label for (read from the ``birdnet_missing_species`` of any
zero-shot run given).  Runs are grouped by their name with the ``splits-seedS-`` prefix removed, so
the repeated-split runs of ``bench_birdnet_splits.py`` add up per kind.  ``--list`` adds every
error.  Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from birdcore.analysis.scores import load_score_table, top1_errors  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--list", action="store_true", help="list every misclassified recording")
    args = p.parse_args()

    manifests = {run: json.loads((run / "run.json").read_text()) for run in args.runs}
    missing = sorted({code for m in manifests.values() for code in m.get("birdnet_missing_species", [])})
    groups: dict[str, dict] = {}
    for run in args.runs:
        table = load_score_table(run)
        errors = top1_errors(table)
        kind = re.sub(r"^splits-seed\d+-", "", run.name)
        g = groups.setdefault(kind, {"runs": 0, "test_recordings": 0, "errors": 0, "predicted_background": 0,
                                     "errors_on_birdnet_missing": 0, "predicted_birdnet_missing": 0,
                                     "recordings_wrong_in_several_runs": {}})
        g["runs"] += 1
        g["test_recordings"] += table.n_recordings
        g["errors"] += len(errors)
        g["predicted_background"] += int(errors["predicted_is_background"].sum())
        g["errors_on_birdnet_missing"] += int(errors["primary"].isin(missing).sum())
        g["predicted_birdnet_missing"] += int(errors["predicted"].isin(missing).sum())
        for rid in errors["recording_id"]:
            g["recordings_wrong_in_several_runs"][rid] = g["recordings_wrong_in_several_runs"].get(rid, 0) + 1
        if args.list:
            g.setdefault("errors_list", []).extend(
                {"run": run.name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}}
                for row in errors.astype(object).to_dict("records"))
    for g in groups.values():
        g["top1"] = round(1 - g["errors"] / max(g["test_recordings"], 1), 4)
        g["recordings_wrong_in_several_runs"] = {
            rid: n for rid, n in sorted(g["recordings_wrong_in_several_runs"].items(), key=lambda kv: -kv[1]) if n > 1}
    print(json.dumps({"birdnet_missing_species": missing, "groups": groups}, indent=1, default=str))


if __name__ == "__main__":
    main()
