"""The ``birdnet_append`` kind (``--backbone birdnet --append``): BirdNET V2.4's own species with their own
scores, plus the training species BirdNET lacks, scored by a layer trained to compete with BirdNET's logits.

What it shares: BirdNET's settings and engine, the embedding cache (``birdnet_head.embeddings``), the
known species' scores (``birdnet_zero_shot.scorer``), the window scorers' streaming and overlap
(``birdnet.scoring``).  What is its own: the species table (``species``), the added layer and its
training (``head``), fitted in ``prepare_inputs`` in NumPy (full batch, seconds) instead of the Keras
loop, and a NumPy scorer (no Keras import when serving).
"""
from __future__ import annotations

from pathlib import Path

from birdcore.models.base import ModelKind
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine
from birdcore.models.birdnet.scoring import hop_seconds, read_mapping


class BirdNETAppend(ModelKind):
    name = "birdnet_append"
    description = "BirdNET V2.4 + added species"
    supports_overlap = True
    trained_by_loop = False  # the added layer is fitted in prepare_inputs
    mixed_precision = False

    def configure(self, cfg, *, given=frozenset()) -> None:
        bn.birdnet_config(cfg)
        cfg.model.backbone = "birdnet"
        if "pooling" not in given:
            cfg.model.pooling = "max"  # zero-shot's pooling: one scale for all

    def check_config(self, cfg) -> None:
        bn.check_config(cfg)
        if cfg.model.pooling != "max":
            raise ValueError("an append run pools windows by max, as BirdNET zero-shot (its known species' scores "
                             f"are zero-shot's); got pooling {cfg.model.pooling}")
        if cfg.model.species_list:
            from birdcore.data.species_lists import species_table

            species_table(cfg.model.species_list)  # ValueError naming the list: said before any data is read
        if cfg.tune.enabled:
            raise ValueError("--tune searches the Keras training's settings; an append run has none to search "
                             "(set model.append_margin / model.append_l2 with --set)")

    def prepare_inputs(self, run, cfg, data, *, cache_root) -> dict:
        from birdcore.models.birdnet_append.training import prepare_append

        return prepare_append(run, cfg, data, cache_root=Path(cache_root))

    def data_scorer(self, model, cfg, inputs, *, batch_segments=32):
        from birdcore.models.birdnet_append.scorer import AppendScorer

        return AppendScorer(inputs["columns"], inputs["head"])

    def manifest(self, cfg, inputs) -> dict:
        from birdcore.models.birdnet_append.head import STEPS

        return {"weights": "BirdNET V2.4", "license": bn.LICENSE_NOTE, "added_species": inputs["added"],
                "append": {"margin": cfg.model.append_margin, "l2": cfg.model.append_l2, "temperature": cfg.model.append_temperature,
                           "shots": cfg.model.append_shots, "steps": STEPS, "species_list": cfg.model.species_list,
                           "training": inputs["training"], "validation": inputs["validation"]}}

    def describe(self, manifest: dict) -> str:
        from birdcore.models.birdnet_append.training import validation_summary

        added = manifest.get("added_species") or []
        validation = (manifest.get("append") or {}).get("validation")
        checked = f"; {validation_summary(validation)}" if validation else ""
        return (f"{self.description} ({len(added)} added: {', '.join(added[:5])}{' ...' if len(added) > 5 else ''}"
                f"{checked})")

    def load_model(self, run_dir):
        """The added species' layer (``head.AddedHead``, NumPy)."""
        from birdcore.models.birdnet_append.training import load_head

        return load_head(Path(run_dir))

    def run_scorer(self, run, *, batch_segments=32, threads=None, overlap=0.0):
        from birdcore.models.birdnet_append.scorer import AppendScorer

        return AppendScorer(read_mapping(run.path)["columns"], run.model, overlap=overlap,
                            birdnet=birdnet_engine(embeddings=True, threads=threads))

    def segment_hop_seconds(self, cfg, overlap: float = 0.0) -> float:
        return hop_seconds(overlap)
