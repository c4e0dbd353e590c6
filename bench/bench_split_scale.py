"""The split and its summary at the Cornell size (21,375 recordings, 264 species), against a copy of
the old code given as OLD_SPLIT_PY: the same labels, and the seconds of each.

    cp birdcore/data/split.py /tmp/split_old.py  # from the commit before the change
    python bench/bench_split_scale.py
"""
import importlib.util, sys, time
import numpy as np, pandas as pd
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import os
spec = importlib.util.spec_from_file_location("old", os.environ.get("OLD_SPLIT_PY", "/tmp/split_old.py")); old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
from birdcore.data import split as new
rng = np.random.default_rng(0)
for n, s in [(300, 7), (21375, 264)]:
    df = pd.DataFrame({"recording_id": [f"r{i}" for i in rng.permutation(n)], "primary": rng.choice([f"sp{j}" for j in range(s)], n), "xc_id": rng.integers(-1, 600000, n)})
    df.index = rng.permutation(n) + 5
    for m in ("stratified", "xc_hundreds"):
        t = time.time(); a = old.split_recordings(df, method=m, seed=3); t1 = time.time() - t
        t = time.time(); b = new.split_recordings(df, method=m, seed=3); t2 = time.time() - t
        assert a.equals(b), m
        sa, sb = old.split_summary(a, df), new.split_summary(b, df)
        assert sa == sb and list(sa["per_species"]) == list(sb["per_species"])
        print(n, s, m, f"old {t1:.2f}s new {t2:.2f}s")
    t = time.time(); old.split_summary(a, df); t1 = time.time() - t
    t = time.time(); new.split_summary(a, df); t2 = time.time() - t
    print("summary", f"old {t1:.2f}s new {t2:.2f}s")
