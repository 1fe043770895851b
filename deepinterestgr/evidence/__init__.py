"""Item evidence: CMSA captions and image features, DCIM descriptors, QARM quality labels, text embeddings."""
