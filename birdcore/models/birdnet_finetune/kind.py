"""The ``birdnet_finetune`` kind (``--backbone birdnet --fine-tune N``): BirdNET V2.4's last N blocks
trained together with the head of ``birdnet_head``.

A kind of its own rather than a switch inside ``birdnet_head``: its inputs (activations at the cut,
not embeddings), its model file (the whole network, raw windows in) and its scorer all differ, so a
switch would branch in nearly every method.  What is the same is inherited or called: the head
(``build_head``), its training batches (random crops of consecutive windows, weak recording labels),
its species mapping and prior sources, the attention pooling and the loss.  The frozen front is run
once per recording and cached (``activations``); the run's ``model.keras`` is the whole network
(``network.whole_model``), which loads in safe mode and scores through the usual paths.
"""
from __future__ import annotations

from pathlib import Path

from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet_head.kind import BirdNETHead
from birdcore.models.saving import MODEL_FILE, load_keras

BACKBONE_LR_SCALE = 0.1  # default of model.backbone_lr_scale


class BirdNETFineTune(BirdNETHead):
    """Per-run state travels in ``inputs`` (``prepare_inputs``'s result), never on this shared object:
    the species mapping with its prior sources (for ``build``) and ``FRONT``, the frozen front the
    activations came from (for ``serving_model``: the exported network is the one trained on, even if
    the converted BirdNET in the cache has changed since)."""

    name = "birdnet_finetune"
    description = "BirdNET V2.4 fine-tuned + head"
    FRONT = "birdnet_front"  # key of ``inputs``

    def check_config(self, cfg) -> None:
        from birdcore.models.birdnet_finetune.network import check_blocks

        super().check_config(cfg)
        check_blocks(cfg.model.fine_tune)
        if not cfg.model.backbone_lr_scale >= 0:
            raise ValueError(f"model.backbone_lr_scale must be ≥ 0, got {cfg.model.backbone_lr_scale}")
        if cfg.augment.birdnet_shifted_windows or cfg.train.review_db:
            raise ValueError("fine-tuning BirdNET does not take shifted windows or reviewed clips (yet)")

    def prepare_inputs(self, run, cfg, data, *, cache_root) -> dict:
        from birdcore.models.birdnet_finetune.activations import compute_activations
        from birdcore.models.birdnet_finetune.network import (load_birdnet, register_layers, split_birdnet,
                                                              trained_layer_names)
        from birdcore.models.birdnet_head.embeddings import species_mapping

        register_layers()  # a resumed run loads its checkpoint (with the optimizer) after this

        mapping = species_mapping(run, cfg, data)
        birdnet = load_birdnet()
        front, _ = split_birdnet(birdnet, cfg.model.fine_tune, mapping["prior_sources"])
        cut = trained_layer_names(birdnet, cfg.model.fine_tune)[0]
        compute_activations(data, front, cut=cut, cache_root=Path(cache_root))
        return {**mapping, self.FRONT: front}

    def build(self, cfg, n_species: int, *, inputs=None):
        from birdcore.models.birdnet_finetune.network import load_birdnet, split_birdnet, training_model
        from birdcore.models.birdnet_head.head import build_head

        if cfg.model.birdnet_prior and "prior_sources" not in (inputs or {}):
            raise RuntimeError("build needs prepare_inputs's inputs (the species mapped to BirdNET)")
        _, tail = split_birdnet(load_birdnet(), cfg.model.fine_tune, (inputs or {}).get("prior_sources"))
        return training_model(tail, build_head(cfg, n_species))

    def optimizer(self, cfg):
        from birdcore.models.birdnet_finetune.network import BLOCKS
        from birdcore.models.birdnet_finetune.optimizer import ScaledAdam

        blocks = BLOCKS[-cfg.model.fine_tune:]
        prefixes = [f"{b}_" for b in blocks if b != "POST"] + (["BNORM_POST", "POST_"] if "POST" in blocks else [])
        return ScaledAdam(learning_rate=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay or None,
                          scaled_prefixes=prefixes, lr_scale=cfg.model.backbone_lr_scale)

    def data_scorer(self, model, cfg, inputs, *, batch_segments=32):
        from birdcore.models.birdnet_finetune.scorer import ActivationScorer

        return ActivationScorer(model)

    def serving_model(self, model, cfg, *, inputs=None):
        from birdcore.models.birdnet_finetune.network import HEAD, TAIL, load_birdnet, split_birdnet, whole_model

        front = (inputs or {}).get(self.FRONT)
        if front is None:
            front = split_birdnet(load_birdnet(), cfg.model.fine_tune, (inputs or {}).get("prior_sources"))[0]
        return whole_model(front, model.get_layer(TAIL), model.get_layer(HEAD))

    def manifest(self, cfg, inputs) -> dict:
        from birdcore.models.birdnet_finetune.network import BLOCKS

        return {"license": bn.LICENSE_NOTE, "fine_tuned_blocks": list(BLOCKS[-cfg.model.fine_tune:]),
                "backbone_lr_scale": cfg.model.backbone_lr_scale}

    def load_model(self, run_dir):
        """On the LiteRT engine (``engines.current_engine``), the network as BirdNET's TFLite model with
        the trained blocks written in and the head in NumPy (``litert.read_litert_model``: no Keras
        import); on Keras, without BirdNET's file or LiteRT, or when the network cannot be served
        that way, the Keras model (the whole network, which needs neither)."""
        from birdcore.models.birdnet.engines import current_engine

        if current_engine() == "litert" and bn.birdnet_available():
            from birdcore.models.birdnet_finetune.litert import read_litert_model

            model = read_litert_model(Path(run_dir) / MODEL_FILE)
            if model is not None:
                return model
        from birdcore.models.birdnet_finetune.network import register_layers

        register_layers()
        return load_keras(Path(run_dir) / MODEL_FILE)

    def run_scorer(self, run, *, batch_segments=32, threads=None, overlap=0.0):
        from birdcore.models.birdnet_finetune.litert import LiteRTFineTuned

        if isinstance(run.model, LiteRTFineTuned):
            from birdcore.models.birdnet_head.inference import BirdNETHeadScorer

            birdnet = bn.BirdNET(embeddings=True, threads=threads, model_content=run.model.tflite)
            return BirdNETHeadScorer(run.model.head, sources=run.model.sources, overlap=overlap, birdnet=birdnet)
        from birdcore.models.birdnet_finetune.scorer import FineTunedScorer

        return FineTunedScorer(run.model, overlap=overlap)

    def describe(self, manifest: dict) -> str:
        blocks = manifest.get("fine_tuned_blocks") or []
        return f"{self.description} ({len(blocks)} blocks: {', '.join(blocks)})" if blocks else self.description
