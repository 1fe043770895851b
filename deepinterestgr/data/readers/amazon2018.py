"""Amazon Review Data 2018 (Ni et al.): `<Cat>_5.json.gz` + `meta_<Cat>.json.gz`, JSON lines."""

from __future__ import annotations

from deepinterestgr.data.readers.amazon_raw import AmazonRawReader, required_number, required_str
from deepinterestgr.data.readers.lines import category_paths, text_field
from deepinterestgr.data.schema import Item


class Amazon2018Reader(AmazonRawReader):
    """Amazon 2018 raw dump: <Cat>_5.json(.gz) reviews + meta_<Cat>.json(.gz) metadata, JSON lines."""

    expects = "<Cat>_5.json.gz and meta_<Cat>.json.gz (Amazon 2018)"

    def review_patterns(self, category):
        cat = category or "*"
        return [f"{cat}_5.json.gz", f"{cat}_5.json", f"{cat}.json.gz", f"{cat}.json"] if category else [
            "[!m]*_5.json.gz", "[!m]*_5.json"]

    def meta_patterns(self, category):
        cat = category or "*"
        return [f"meta_{cat}.json.gz", f"meta_{cat}.json"]

    def review_fields(self, record):
        user, item = required_str(record, "reviewerID"), required_str(record, "asin")
        return user, item, required_number(record, "unixReviewTime")

    def item_from_meta(self, record):
        images = [*(record.get("imageURLHighRes") or []), *(record.get("imageURL") or [])]
        return Item(
            item_id=-1,
            source_id=required_str(record, "asin"),
            title=text_field(record.get("title")),
            description=text_field(record.get("description")),
            brand=text_field(record.get("brand")),
            categories=category_paths(record.get("category") or record.get("categories")),
            images=list(dict.fromkeys(images)),
        )
