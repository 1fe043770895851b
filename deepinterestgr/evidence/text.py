"""How an item becomes text: the raw item text every plugin reads, and the enriched text that is embedded.

Enriched text (paper): `title \\n description \\n caption \\n descriptors (ordered)`. Catalogs such as Amazon 2014
Beauty carry no description, so the category path stands in as its own line (it is what a shopper reads under
the title); empty parts are dropped so that a missing caption does not change the embedding of an item.
"""

from __future__ import annotations

from collections.abc import Sequence

from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.contracts import Descriptor


def category_path(item: Item) -> str:
    return " > ".join(c for c in item.categories if c)


def item_text(item: Item, caption: str = "") -> str:
    """Title, category path, description (and the CMSA caption when given): what miners and judges read."""
    parts = [item.title, category_path(item), item.description, caption]
    return "\n".join(p.strip() for p in parts if p and p.strip())


def truncate(text: str, max_chars: int) -> tuple[str, bool]:
    """Cut at `max_chars` on a word boundary when one is near; returns (text, was_truncated)."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars * 0.8 else cut), True


def enriched_text(item: Item, caption: str, descriptors: Sequence[Descriptor]) -> str:
    lines = [item.title, category_path(item), item.description, caption]
    if descriptors:
        lines.append("; ".join(d.descriptor for d in descriptors))
    return "\n".join(line.strip() for line in lines if line and line.strip())
