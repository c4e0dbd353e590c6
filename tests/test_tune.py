"""keras-tuner search on the validation split; the final training uses the best values."""
import json

from birdcore.training.train import train_run

from conftest import tiny_config


def test_tuning_picks_values_used_by_the_final_training(synth_dir, tmp_path):
    cfg = tiny_config(epochs=1)
    cfg.tune.enabled = True
    cfg.tune.max_trials = 2
    cfg.tune.epochs_per_trial = 1
    run = train_run(data_dir=synth_dir, out_dir=tmp_path / "runs", name="t", cfg=cfg,
                    cache_dir=tmp_path / "cache", workers=1)
    tuning = json.loads((run / "tuning.json").read_text())
    assert len(tuning["trials"]) == 2
    # every trial really trained and was scored (a missing optional import once failed them all silently)
    assert [t["status"] for t in tuning["trials"]] == ["COMPLETED", "COMPLETED"]
    assert all(0.0 <= t["score"] <= 1.0 for t in tuning["trials"])
    best = tuning["best"]
    assert set(best) == {"learning_rate", "time_mask_max", "freq_mask_max", "db_floor_max"}
    assert 1e-5 <= best["learning_rate"] <= 1e-3
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["train"]["learning_rate"] == best["learning_rate"]
    assert saved["augment"]["time_mask_max"] == best["time_mask_max"]
    assert saved["augment"]["db_floor_max"] == best["db_floor_max"]
    assert (run / "tuning").is_dir()
