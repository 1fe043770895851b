"""Amazon Reviews 2023 (Hou et al.): `<Cat>.jsonl(.gz)` reviews + `meta_<Cat>.jsonl(.gz)`, keyed by parent_asin."""

from __future__ import annotations

from deepinterestgr.data.readers.amazon_raw import AmazonRawReader, required_number, required_str
from deepinterestgr.data.readers.lines import category_paths, text_field
from deepinterestgr.data.schema import Item


class Amazon2023Reader(AmazonRawReader):
    """Amazon 2023 raw dump: <Cat>.jsonl(.gz) reviews (user_id, parent_asin, ms timestamp) + meta_<Cat>.jsonl(.gz)."""

    expects = "<Cat>.jsonl(.gz) and meta_<Cat>.jsonl(.gz) (Amazon Reviews 2023)"

    def review_patterns(self, category):
        if category:
            return [f"{category}.jsonl.gz", f"{category}.jsonl"]
        return ["[!m]*.jsonl.gz", "[!m]*.jsonl"]

    def meta_patterns(self, category):
        cat = category or "*"
        return [f"meta_{cat}.jsonl.gz", f"meta_{cat}.jsonl"]

    def review_fields(self, record):
        # parent_asin groups colour/size variants into one product, the unit the 2023 benchmarks recommend
        ts_ms = required_number(record, "timestamp")
        return required_str(record, "user_id"), required_str(record, "parent_asin"), ts_ms / 1000.0

    def item_from_meta(self, record):
        images = []
        for image in record.get("images") or []:
            if isinstance(image, dict):
                best = image.get("hi_res") or image.get("large") or image.get("thumb")
                if best:
                    images.append(best)
        return Item(
            item_id=-1,
            source_id=required_str(record, "parent_asin"),
            title=text_field(record.get("title")),
            description=text_field(record.get("description")),
            brand=text_field(record.get("store") or _details_brand(record.get("details"))),
            categories=category_paths([record["categories"]] if record.get("categories") else []),
            images=images,
        )


def _details_brand(details) -> str:
    return details.get("Brand", "") if isinstance(details, dict) else ""
