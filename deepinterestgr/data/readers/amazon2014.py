"""Amazon Review Data 2014 (McAuley et al.): `reviews_<Cat>_5.json.gz` + `meta_<Cat>.json.gz`."""

from __future__ import annotations

from deepinterestgr.data.readers.amazon_raw import AmazonRawReader, asin_item


class Amazon2014Reader(AmazonRawReader):
    """Amazon 2014 raw dump: reviews_<Cat>_5.json(.gz) (JSON lines) + meta_<Cat>.json(.gz) (Python-literal lines)."""

    expects = "reviews_<Cat>_5.json.gz and meta_<Cat>.json.gz (Amazon 2014)"
    # The 2014 metadata was written with Python's repr (single quotes): `ast.literal_eval`, never `eval`.
    meta_is_python_literal = True

    def review_patterns(self, category):
        cat = category or "*"
        return [f"reviews_{cat}_5.json.gz", f"reviews_{cat}_5.json", f"reviews_{cat}.json.gz", f"reviews_{cat}.json"]

    def item_from_meta(self, record):
        return asin_item(record, categories=record.get("categories"),
                         images=[record["imUrl"]] if record.get("imUrl") else [])
