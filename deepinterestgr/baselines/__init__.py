"""Non-generative floors for the benchmark tables (BASELINES.md): most-popular, transition + co-occurrence counts,
SASRec; same leave-one-out split and full-ranking Recall/NDCG@K as the generative models."""

from deepinterestgr.baselines.runner import METHODS, run_baselines, run_baselines_on_sequences

__all__ = ["METHODS", "run_baselines", "run_baselines_on_sequences"]
