"""Amazon Review Data 2018 (Ni et al.): `<Cat>_5.json.gz` + `meta_<Cat>.json.gz`, JSON lines."""

from __future__ import annotations

from deepinterestgr.data.readers.amazon_raw import AmazonRawReader, asin_item


class Amazon2018Reader(AmazonRawReader):
    """Amazon 2018 raw dump: <Cat>_5.json(.gz) reviews + meta_<Cat>.json(.gz) metadata, JSON lines."""

    expects = "<Cat>_5.json.gz and meta_<Cat>.json.gz (Amazon 2018)"

    def review_patterns(self, category):
        cat = category or "*"
        return [f"{cat}_5.json.gz", f"{cat}_5.json", f"{cat}.json.gz", f"{cat}.json"] if category else [
            "[!m]*_5.json.gz", "[!m]*_5.json"]

    def item_from_meta(self, record):
        images = [*(record.get("imageURLHighRes") or []), *(record.get("imageURL") or [])]
        return asin_item(record, categories=record.get("category") or record.get("categories"),
                         images=list(dict.fromkeys(images)))
