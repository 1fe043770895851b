"""Quantize stage: item embeddings -> Semantic IDs (RQ-VAE / RQ-KMeans, CMSA fusion, collision suffixes)."""
