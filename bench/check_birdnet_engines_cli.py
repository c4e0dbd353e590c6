"""The command-line contract of issue #15, checked from outside: ``python -m birdcore.predict birdnet
FILES --engine keras --json --top 5`` and the same with ``--engine litert`` give the same top-1 on
every file, with top-5 scores within 1e-3.  Prints the largest differences; exit status 1 if the
contract fails.

    python bench/check_birdnet_engines_cli.py ../shared/data/xc-ca10/train_audio
    python bench/check_birdnet_engines_cli.py --generate 4     # generated calls in a temporary folder
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile


def predict(paths: list[str], engine: str) -> dict[str, list[dict]]:
    cmd = [sys.executable, "-m", "birdcore.predict", "birdnet", *paths, "--engine", engine, "--json", "--top", "5"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["file"]: r["top"] for r in rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", help="audio files or folders")
    p.add_argument("--generate", type=int, default=0, help="also score N generated calls (7.3 s each)")
    args = p.parse_args()
    paths = list(args.paths)
    tmp = None
    if args.generate:
        import numpy as np
        import soundfile as sf

        from birdcore.data.synthetic import make_call, species_names

        tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(3)
        for i, code in enumerate(list(species_names())[: args.generate]):
            sf.write(f"{tmp.name}/{code}_{i}.wav", make_call(code, seconds=7.3, sample_rate=48000, rng=rng), 48000)
        paths.append(tmp.name)
    keras_top, litert_top = predict(paths, "keras"), predict(paths, "litert")
    assert keras_top.keys() == litert_top.keys() and keras_top, "both engines score the same files"
    same_top1, worst = 0, 0.0
    for f, k in keras_top.items():
        r = litert_top[f]
        same_top1 += k[0]["ebird_code"] == r[0]["ebird_code"]
        lit = {s["ebird_code"]: s["score"] for s in r}
        worst = max([worst] + [abs(s["score"] - lit[s["ebird_code"]]) for s in k if s["ebird_code"] in lit])
        if {s["ebird_code"] for s in k} != set(lit):
            print(f"{f}: top-5 species differ (ties near the 5th score?)")
    ok = same_top1 == len(keras_top) and worst <= 1e-3
    print(f"{len(keras_top)} files: same top-1 on {same_top1}; max |top-5 score difference| {worst:.2e}; "
          f"contract {'holds' if ok else 'FAILS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
