"""Serving a trained run (`dig serve`) and adding items to it without retraining (`dig items add`)."""
