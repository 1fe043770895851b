"""Quantize stage: item embeddings -> Semantic IDs (RQ-VAE / RQ-KMeans, CMSA fusion, collision suffixes).

Heavy imports (Lightning) stay in the submodules: `from deepinterestgr.quantize.stage import run_quantize`.
"""
