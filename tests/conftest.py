"""Shared fixtures. Thread counts are set explicitly: with another process on the 2 cores, torch's default
threading slows 6-16x."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


_torch_threads()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $DIG_DATA_ROOT); tests using it skip with the reason when it is absent."""
    root = Path(os.environ.get("DIG_DATA_ROOT", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set DIG_DATA_ROOT to the shared data folder)")
    return root


@pytest.fixture
def fresh_registry():
    """A registry built from a throwaway plugin manager (built-ins + entry points), not the process-wide one."""
    from deepinterestgr.registry import Registry

    return Registry.load()


@pytest.fixture
def letter_root(tmp_path) -> Path:
    """The hand-made LC-Rec/LETTER fixture laid out as the reader expects (`Mini.inter.json` + `Mini.item.json`).

    The interaction file is stored as `Mini.inter.fixture` so that it is not mistaken for a copied dataset file."""
    import shutil

    src = REPO / "tests" / "fixtures" / "data" / "letter"
    root = tmp_path / "letter_fixture"
    root.mkdir()
    shutil.copy(src / "Mini.inter.fixture", root / "Mini.inter.json")
    shutil.copy(src / "Mini.item.json", root / "Mini.item.json")
    return root
