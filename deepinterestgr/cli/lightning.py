"""`dig fit|validate|test|predict`: the command line's door to `deepinterestgr.lightning_configs` (stages and the
pipeline import that module directly; nothing below the command line imports `deepinterestgr.cli`)."""

from deepinterestgr.lightning_configs import DigLightningCLI, load_components, run_lightning

__all__ = ["DigLightningCLI", "load_components", "run_lightning"]
