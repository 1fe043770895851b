"""Data layer: readers for real Amazon formats, the embedded synthetic catalog, preprocessing and splits."""
