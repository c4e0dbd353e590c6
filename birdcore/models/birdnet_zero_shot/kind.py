"""The ``birdnet_zero_shot`` kind (``--baseline birdnet``): BirdNET V2.4's own scores, no training.

The run's species are matched to BirdNET's by scientific name (species BirdNET lacks score 0);
recording score = max over 3 s windows.
"""
from __future__ import annotations

import logging

from birdcore.io.atomic import atomic_write_json
from birdcore.models.base import ModelKind
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine
from birdcore.models.birdnet.scoring import SPECIES_MAPPING_FILE, hop_seconds, read_mapping

log = logging.getLogger("birdcore")


class BirdNETZeroShot(ModelKind):
    name = "birdnet_zero_shot"
    description = "BirdNET V2.4 zero-shot"
    trains = False
    supports_overlap = True

    def configure(self, cfg, *, given=frozenset()) -> None:
        bn.birdnet_config(cfg)
        cfg.model.backbone, cfg.model.pooling = "birdnet", "max"

    def check_config(self, cfg) -> None:
        bn.check_config(cfg)

    def prepare_inputs(self, run, cfg, data, *, cache_root) -> dict:
        columns, missing = bn.map_species(data.species, bn.load_labels())
        if missing:
            log.warning("BirdNET does not know %d of %d species (scored 0): %s", len(missing), len(columns),
                        ", ".join(missing))
        mapping = {"columns": columns, "missing": missing, "license": bn.LICENSE_NOTE}
        atomic_write_json(run.file(SPECIES_MAPPING_FILE), mapping)
        return mapping

    def data_scorer(self, model, cfg, inputs, *, batch_segments=32):
        from birdcore.models.birdnet_zero_shot.scorer import ZeroShotScorer

        return ZeroShotScorer(inputs["columns"])

    def manifest(self, cfg, inputs) -> dict:
        return {"weights": "BirdNET V2.4", "license": bn.LICENSE_NOTE,
                "birdnet_missing_species": inputs.get("missing", [])}

    def run_scorer(self, run, *, batch_segments=32, threads=None, overlap=0.0):
        from birdcore.models.birdnet_zero_shot.scorer import ZeroShotScorer

        columns = run.birdnet_columns if run.birdnet_columns is not None else read_mapping(run.path)["columns"]
        return ZeroShotScorer(columns, overlap=overlap, birdnet=birdnet_engine(threads=threads))

    def segment_hop_seconds(self, cfg, overlap: float = 0.0) -> float:
        return hop_seconds(overlap)
