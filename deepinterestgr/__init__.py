"""DeepInterestGR: generative recommendation over Semantic IDs with intent-enriched item evidence."""

__version__ = "0.1.0"
