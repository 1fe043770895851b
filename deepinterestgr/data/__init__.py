"""Data layer: readers for real Amazon formats, the embedded synthetic catalog, preprocessing and splits.

Entry points: `prepare_dataset` (the `data` stage), the loaders in `deepinterestgr.data.io`, `leave_one_out`
in `deepinterestgr.data.split`, `download_amazon` in `deepinterestgr.data.download`.
"""

from deepinterestgr.data.io import load_catalog, load_sequences, load_stats, load_truth
from deepinterestgr.data.prepare import format_stats, prepare_dataset

__all__ = ["format_stats", "load_catalog", "load_sequences", "load_stats", "load_truth", "prepare_dataset"]
