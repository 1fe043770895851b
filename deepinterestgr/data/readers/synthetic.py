"""A reader that generates: the embedded synthetic catalog (see deepinterestgr.data.synthetic)."""

from __future__ import annotations

import shutil
from pathlib import Path

from deepinterestgr.artifacts import atomic_write_json
from deepinterestgr.data.readers.base import DatasetReader
from deepinterestgr.data.schema import Item, RawDataset
from deepinterestgr.data.synthetic import generate_synthetic, write_images


class SyntheticReader(DatasetReader):
    """Generated beauty catalog with latent intents, rendered images and ground truth (no files needed)."""

    expects = "nothing: generated from num_items / num_users / seed"
    needs_files = False

    def __init__(self, *, strict: bool = False, num_items: int = 600, num_users: int = 800, seed: int = 42,
                 render_images: bool = True, image_size: int = 64) -> None:
        super().__init__(strict=strict)
        self.num_items, self.num_users, self.seed = num_items, num_users, seed
        self.render_images, self.image_size = render_images, image_size
        self._truth: dict | None = None
        self._index_of: dict[str, int] = {}

    def read(self, path: str | Path | None = None, *, category: str | None = None) -> RawDataset:
        raw, truth = generate_synthetic(self.num_items, self.num_users, self.seed, render_images=self.render_images,
                                        image_size=self.image_size)
        self._truth = truth
        self._index_of = {item.source_id: k for k, item in enumerate(raw.items)}
        return raw

    def write_extras(self, data_dir: Path, items: list[Item]) -> list[str]:
        """truth.json re-indexed to the dense ids (index = item_id), and one PNG per kept item."""
        if self._truth is None:
            raise RuntimeError("SyntheticReader.write_extras called before read()")
        truth_items = self._truth["items"]
        kept = [truth_items[self._index_of[item.source_id]] for item in sorted(items, key=lambda it: it.item_id)]
        atomic_write_json(Path(data_dir) / "truth.json", {**self._truth, "items": kept})
        written = ["truth.json"]
        # images of a previous run with other settings would linger unreferenced next to the new ones
        shutil.rmtree(Path(data_dir) / "images", ignore_errors=True)
        if self.render_images:
            written += write_images(truth_items, [it.source_id for it in items], data_dir, size=self.image_size,
                                    seed=self.seed, index_of=self._index_of)
        return written
