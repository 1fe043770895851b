"""Item evidence: CMSA captions and image features, DCIM descriptors, QARM quality labels, text embeddings.

Entry point: `deepinterestgr.evidence.stage.run_evidence(run_dir, ...)` (the `dig evidence` stage), whose plugins are
typed arguments (`class_path` / `init_args`). The built-in plugins of the kinds text_encoder, intent_miner,
quality_judge, captioner, image_encoder, collaborative_source and attribute_source are registered in
`deepinterestgr.evidence.plugins`; `deepinterestgr.evidence.testing` holds the contract checks every registered
plugin must pass.
"""
