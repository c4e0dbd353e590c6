"""The ``birdnet_head`` kind (``--backbone birdnet``): a trained head over frozen BirdNET V2.4 embeddings."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from birdcore.models.base import ModelKind
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine
from birdcore.models.birdnet.scoring import hop_seconds, read_mapping

LEARNING_RATE = 3e-4  # chosen on validation over 5 splits (BENCHMARKS.md)
POOLING = "attention"  # chosen on xc-pr20 validation data (BENCHMARKS.md)


class BirdNETHead(ModelKind):
    name = "birdnet_head"
    description = "BirdNET V2.4 embeddings + trained head"
    supports_overlap = True
    # float32 even on a GPU under "auto": the head is too small to gain from float16, BirdNET's own
    # layers are float32 anyway, and a float32 head serves in NumPy and on LiteRT without Keras
    # (``inference.read_numpy_head``, ``birdnet_finetune.litert``) with the scores it was evaluated
    # with; a mixed-precision one is served there in float32, within float16 rounding of them.
    mixed_precision = False

    def configure(self, cfg, *, given=frozenset()) -> None:
        bn.birdnet_config(cfg)
        cfg.model.backbone = "birdnet"
        if "learning_rate" not in given:
            cfg.train.learning_rate = LEARNING_RATE
        if "pooling" not in given:
            cfg.model.pooling = POOLING

    def check_config(self, cfg) -> None:
        bn.check_config(cfg)

    def prepare_inputs(self, run, cfg, data, *, cache_root) -> dict:
        from birdcore.models.birdnet_head.embeddings import prepare_birdnet_inputs, review_examples

        inputs = prepare_birdnet_inputs(run, cfg, data, cache_root=Path(cache_root))
        if cfg.train.review_db:
            held_out = {str(Path(p).resolve()) for p in data.df.loc[data.df["split"].isin(["val", "test"]), "path"]}
            inputs["review_examples"] = review_examples(cfg.train.review_db, data.codes, inputs["prior_sources"]
                                                        if cfg.model.birdnet_prior else None, held_out=held_out)
        return inputs

    def build(self, cfg, n_species: int, *, inputs=None):
        from birdcore.models.birdnet_head.head import build_head

        return build_head(cfg, n_species)

    def training_batches(self, cfg, data, targets, primary, *, noise_bank=None, inputs=None):
        from birdcore.models.birdnet_head.head import EmbeddingBatches

        rows = data.rows("train")
        extra = (inputs or {}).get("review_examples") or []
        load = lambda i: data.load_train(int(rows[i])) if i < len(rows) else extra[i - len(rows)][0]  # noqa: E731
        if extra:
            targets = np.concatenate([targets[rows], np.stack([t for _, t in extra])])
            rows_targets = targets
        else:
            rows_targets = targets[rows]
        return EmbeddingBatches(load=load, targets=rows_targets,
                                windows=max(1, math.ceil(cfg.train.train_seconds / cfg.audio.segment_seconds)),
                                batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                                steps_per_epoch=cfg.train.steps_per_epoch,
                                interleaved=2 if data.train_item is not None else 1)

    def data_scorer(self, model, cfg, inputs, *, batch_segments=32):
        from birdcore.models.birdnet_head.head import EmbeddingScorer

        return EmbeddingScorer(model, batch_segments=batch_segments)

    def manifest(self, cfg, inputs) -> dict:
        extra = inputs.get("review_examples")
        return {"license": bn.LICENSE_NOTE, **({"review_examples": len(extra)} if extra is not None else {})}

    def load_model(self, run_dir):
        """The head, in NumPy when it is ``build_head``'s (no Keras import: ``inference.load_head``)."""
        from birdcore.models.birdnet_head.inference import load_head
        from birdcore.models.saving import MODEL_FILE

        return load_head(Path(run_dir) / MODEL_FILE)

    def run_scorer(self, run, *, batch_segments=32, threads=None, overlap=0.0):
        from birdcore.models.birdnet_head.embeddings import prior_sources
        from birdcore.models.birdnet_head.inference import BirdNETHeadScorer

        mapping = read_mapping(run.path)
        sources = mapping.get("prior_sources") or prior_sources(mapping["columns"])  # older runs: own columns
        return BirdNETHeadScorer(run.model, sources=sources if mapping.get("prior") else None, overlap=overlap,
                                 birdnet=birdnet_engine(embeddings=True, threads=threads))

    def segment_hop_seconds(self, cfg, overlap: float = 0.0) -> float:
        return hop_seconds(overlap)
