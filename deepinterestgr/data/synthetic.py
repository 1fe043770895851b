"""The embedded synthetic beauty catalog: the default data of the main job, with known ground truth.

Why it exists: CMSA (images) and DCIM (intent descriptors) only help when item evidence hides something the plain
text does not say. Here every item has 1-2 latent usage intents (from `INTENTS`) and visual attributes (colour,
pattern, shape) that follow its main intent. The text reveals intents only partly (titles are brand + product type;
a description names each intent through a paraphrased cue with probability `cue_rate`, and is noise otherwise), and
never mentions the visual attributes, which only the rendered image shows. Users shop by 1-2 intents, so a
recommender that recovers item intents has real signal to exploit; `truth.json` lets tests measure that.

Everything except the text strings and the optional images is vectorised numpy, so a million items take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepinterestgr.data.schema import Interaction, Item, RawDataset

INTENTS: list[str] = [
    "gift for a new mother", "travel-size for carry-on", "gentle care for sensitive skin", "long-lasting evening look",
    "everyday natural look", "summer sun protection", "men's grooming routine", "anti-aging night routine",
    "budget starter kit", "salon-quality results at home", "kids bath time fun", "festival party glitter",
    "vegan and cruelty-free choice", "fragrance lover's treat", "quick morning routine", "spa relaxation evening",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 45), "pink": (240, 130, 180), "gold": (215, 170, 40), "blue": (40, 90, 200),
    "green": (40, 150, 70), "purple": (120, 50, 160), "black": (25, 25, 30), "white": (245, 245, 240),
    "orange": (240, 120, 20), "teal": (20, 150, 150),
}
PATTERNS: list[str] = ["solid", "stripes", "dots", "checks", "rings"]
SHAPES: list[str] = ["circle", "square", "triangle", "diamond", "hexagon", "star"]
PRODUCT_TYPES: list[str] = [
    "lipstick", "face cream", "shampoo", "sunscreen", "eau de parfum", "nail polish", "sheet mask", "body wash",
    "eyeshadow palette", "beard oil", "night serum", "bath bomb", "cleansing gel", "glitter gel", "hair mask",
    "lip balm", "gift set", "mini kit",
]

# Per intent: (colour, pattern, shape) the image tends to show, product types it tends to be, and paraphrased cues
# a description may carry. No cue names a colour, pattern or shape.
_PROFILES: list[tuple[tuple[str, str, str], list[str], list[str]]] = [
    (("pink", "dots", "circle"), ["gift set", "body wash", "face cream"],
     ["A thoughtful present for moms who just welcomed a baby.",
      "Makes a lovely surprise for a friend after her little one arrives."]),
    (("teal", "solid", "square"), ["mini kit", "shampoo", "sunscreen"],
     ["Compact enough to pass airport liquid limits.", "Slips easily into a cabin bag for trips."]),
    (("white", "solid", "circle"), ["face cream", "cleansing gel", "lip balm"],
     ["Formulated for easily irritated, reactive skin.",
      "Mild enough for delicate complexions that react to everything."]),
    (("black", "stripes", "diamond"), ["lipstick", "eyeshadow palette", "nail polish"],
     ["Stays put from dinner until the last dance.", "Built to hold up through a long night out."]),
    (("orange", "solid", "hexagon"), ["lip balm", "face cream", "eyeshadow palette"],
     ["Gives a barely-there finish for daily wear.", "Enhances your features without looking made up."]),
    (("gold", "rings", "circle"), ["sunscreen", "body wash", "lip balm"],
     ["Shields against UV rays during hot beach days.", "Keeps skin safe under the strong midday heat of July."]),
    (("blue", "checks", "square"), ["beard oil", "cleansing gel", "shampoo"],
     ["Designed for guys who want a simple grooming ritual.", "A staple for keeping beard and jaw in shape."]),
    (("purple", "rings", "hexagon"), ["night serum", "face cream", "sheet mask"],
     ["Works overnight to smooth the look of fine lines.", "Apply before bed to wake up to firmer-looking skin."]),
    (("green", "checks", "triangle"), ["mini kit", "nail polish", "lipstick"],
     ["An affordable way to try the basics.", "Everything a beginner needs without breaking the bank."]),
    (("black", "solid", "star"), ["hair mask", "shampoo", "nail polish"],
     ["Professional-grade results without the appointment.", "Recreate a stylist's finish in your own bathroom."]),
    (("orange", "dots", "star"), ["bath bomb", "body wash", "shampoo"],
     ["Turns washing up into playtime for little ones.", "Tear-free and playful so children enjoy getting clean."]),
    (("purple", "dots", "star"), ["glitter gel", "eyeshadow palette", "nail polish"],
     ["Adds sparkle for concerts and outdoor festivals.", "Shimmering fun for parties that last all weekend."]),
    (("green", "stripes", "circle"), ["lipstick", "face cream", "body wash"],
     ["Made without animal ingredients and never tested on animals.", "A plant-based pick for ethical shoppers."]),
    (("red", "stripes", "diamond"), ["eau de parfum", "body wash", "gift set"],
     ["A rich scent for people who collect perfumes.", "Indulgent notes that linger beautifully on the skin."]),
    (("blue", "solid", "triangle"), ["cleansing gel", "sunscreen", "lip balm"],
     ["Saves precious minutes when you are rushing out the door.", "One quick step for busy mornings."]),
    (("teal", "rings", "square"), ["bath bomb", "sheet mask", "eau de parfum"],
     ["Creates a calming retreat atmosphere at home.", "Unwind after a long day with a soothing soak."]),
]

_NOISE_SENTENCES: list[str] = [
    "Suitable for daily use.", "Dermatologically tested.", "Comes in recyclable packaging.",
    "Apply a small amount and massage gently.", "Store in a cool, dry place.",
    "Our best-selling formula, now improved.",
    "Lightweight texture absorbs quickly.", "Pleasant, subtle scent.", "Made in small batches.",
    "A customer favourite since launch.", "Easy-to-use pump dispenser.", "Blends smoothly and evenly.",
    "Long shelf life once opened.", "Part of our signature collection.", "Contents may settle during shipping.",
    "See packaging for full ingredient list.",
]
_BRAND_HEADS = ["Aur", "Bloom", "Cres", "Dahl", "Elar", "Fenn", "Gla", "Hollo", "Iri", "Jun", "Kali", "Lume"]
_BRAND_TAILS = ["elle", "well", "ta", "ora"]
BRANDS: list[str] = [h + t for h in _BRAND_HEADS for t in _BRAND_TAILS]
_VARIANTS = ["", "", "Classic", "Mini", "Deluxe", "Pro", "Essential"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give the main job's catalog (~600 items, ~800 users)."""

    num_items: int = 600
    num_users: int = 800
    seed: int = 42
    second_intent_rate: float = 0.4  # items (and users) with a second intent
    visual_follow_rate: float = 0.75  # each visual attribute follows the main intent's look with this probability
    type_follow_rate: float = 0.6  # product type drawn from the main intent's types
    cue_rate: float = 0.5  # a description names each of the item's intents with this probability
    on_intent_rate: float = 0.85  # a user's next item serves one of their intents (else popularity noise)
    min_length: int = 5
    max_length: int = 20


def _pick(rng: np.random.Generator, follow: np.ndarray, preferred: np.ndarray, n_values: int) -> np.ndarray:
    return np.where(rng.random(len(preferred)) < follow, preferred, rng.integers(0, n_values, len(preferred)))


def generate_synthetic(num_items: int = 600, num_users: int = 800, seed: int = 42, render_images: bool = True,
                       image_size: int = 64, **overrides) -> tuple[RawDataset, dict]:
    """Generate the catalog, user sequences and ground truth. Deterministic in all arguments.

    Returns `(RawDataset, truth)`; `truth["items"][k]` describes `RawDataset.items[k]` (source order; `prepare`
    re-indexes it to dense ids). With `render_images`, `Item.images` holds `images/<source_id>.png`, relative to the
    run's `data/` folder; the pixels are drawn by `render_item_image` when the data stage writes them.
    `overrides` are other `SyntheticConfig` fields.
    """
    cfg = SyntheticConfig(num_items=num_items, num_users=num_users, seed=seed, **overrides)
    if cfg.num_items < len(INTENTS) or cfg.num_users < 1:
        raise ValueError(
            f"need at least {len(INTENTS)} items and 1 user, got {cfg.num_items} items, {cfg.num_users} users")
    rng = np.random.default_rng(cfg.seed)
    n, k = cfg.num_items, len(INTENTS)
    looks = np.array([[list(COLOURS).index(c), PATTERNS.index(p), SHAPES.index(s)] for (c, p, s), _, _ in _PROFILES])
    type_ids = [[PRODUCT_TYPES.index(t) for t in types] for _, types, _ in _PROFILES]

    # ---- items: intents, look, type, brand
    main = rng.integers(0, k, n)
    second = np.where(rng.random(n) < cfg.second_intent_rate, (main + rng.integers(1, k, n)) % k, -1)
    colour = _pick(rng, cfg.visual_follow_rate, looks[main, 0], len(COLOURS))
    pattern = _pick(rng, cfg.visual_follow_rate, looks[main, 1], len(PATTERNS))
    shape = _pick(rng, cfg.visual_follow_rate, looks[main, 2], len(SHAPES))
    type_of_intent = np.array(type_ids)[main, rng.integers(0, 3, n)]
    ptype = _pick(rng, cfg.type_follow_rate, type_of_intent, len(PRODUCT_TYPES))
    brand = rng.integers(0, len(BRANDS), n)
    variant = rng.integers(0, len(_VARIANTS), n)
    popularity = rng.lognormal(0.0, 0.5, n)

    # ---- item text: cues for some intents, noise sentences otherwise
    cue_main = rng.random(n) < cfg.cue_rate
    cue_second = (rng.random(n) < cfg.cue_rate) & (second >= 0)
    cue_choice = rng.integers(0, 2, (n, 2))
    noise = rng.integers(0, len(_NOISE_SENTENCES), (n, 3))
    n_noise = rng.integers(1, 4, n)
    cue_first = rng.random(n) < 0.5
    width = len(str(n - 1))
    # plain lists: indexing numpy scalars in a million-item loop costs more than the whole vectorised part
    main_l, second_l, ptype_l = main.tolist(), second.tolist(), ptype.tolist()
    brand_l, variant_l, n_noise_l = brand.tolist(), variant.tolist(), n_noise.tolist()
    cue_main_l, cue_second_l, cue_first_l = cue_main.tolist(), cue_second.tolist(), cue_first.tolist()
    cue_choice_l, noise_l = cue_choice.tolist(), noise.tolist()
    items: list[Item] = []
    for i in range(n):
        sentences = [_NOISE_SENTENCES[j] for j in dict.fromkeys(noise_l[i][: n_noise_l[i]])]
        cues = []
        if cue_main_l[i]:
            cues.append(_PROFILES[main_l[i]][2][cue_choice_l[i][0]])
        if cue_second_l[i]:
            cues.append(_PROFILES[second_l[i]][2][cue_choice_l[i][1]])
        sentences = cues + sentences if cue_first_l[i] else sentences + cues
        source_id = f"syn{i:0{width}d}"
        brand_name, type_name = BRANDS[brand_l[i]], PRODUCT_TYPES[ptype_l[i]]
        variant_name = _VARIANTS[variant_l[i]]
        items.append(Item(
            item_id=-1, source_id=source_id,
            title=f"{brand_name} {variant_name} {type_name}" if variant_name else f"{brand_name} {type_name}",
            description=" ".join(sentences), brand=brand_name, categories=[f"Beauty > {type_name}"],
            images=[f"images/{source_id}.png"] if render_images else [],
        ))

    # ---- users: 1-2 intents, on-intent picks weighted by popularity, some popularity noise
    u_main = rng.integers(0, k, cfg.num_users)
    u_second = np.where(rng.random(cfg.num_users) < cfg.second_intent_rate,
                        (u_main + rng.integers(1, k, cfg.num_users)) % k, -1)
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, cfg.num_users)
    owner = np.repeat(np.arange(cfg.num_users), lengths)
    total = len(owner)
    use_second = (rng.random(total) < 0.5) & (u_second[owner] >= 0)
    slot_intent = np.where(use_second, u_second[owner], u_main[owner])
    on_intent = rng.random(total) < cfg.on_intent_rate
    chosen = _sample_by_weight(rng, np.arange(n), popularity, total)  # noise picks, overwritten when on intent
    for intent in range(k):
        slots = np.nonzero(on_intent & (slot_intent == intent))[0]
        pool = np.nonzero((main == intent) | (second == intent))[0]
        if len(slots) and len(pool):
            chosen[slots] = _sample_by_weight(rng, pool, popularity[pool], len(slots))
    gaps = rng.exponential(3 * 86400.0, total) + 60.0
    starts = 1.5e9 + rng.integers(0, 30_000_000, cfg.num_users).astype(np.float64)
    offsets = np.cumsum(gaps)
    first_of_user = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    timestamps = starts[owner] + offsets - (offsets[first_of_user] - gaps[first_of_user])[owner]
    uwidth = len(str(cfg.num_users - 1))
    user_names = [f"u{u:0{uwidth}d}" for u in range(cfg.num_users)]
    interactions = [Interaction(user=user_names[u], item=items[c].source_id, timestamp=float(t))
                    for u, c, t in zip(owner.tolist(), chosen.tolist(), np.round(timestamps, 3).tolist())]

    truth = {
        "intent_names": list(INTENTS),
        "attribute_names": {"colour": list(COLOURS), "pattern": list(PATTERNS), "shape": list(SHAPES),
                            "product_type": list(PRODUCT_TYPES)},
        "items": _truth_items(main_l, second_l, colour.tolist(), pattern.tolist(), shape.tolist(), ptype_l,
                              cue_main_l, cue_second_l),
        "user_intents": {user_names[u]: [int(u_main[u])] + ([int(u_second[u])] if u_second[u] >= 0 else [])
                         for u in range(cfg.num_users)},
        "config": {**cfg.__dict__, "render_images": render_images, "image_size": image_size},
    }
    return RawDataset(items=items, interactions=interactions, name="synthetic"), truth


def _truth_items(main, second, colour, pattern, shape, ptype, cue_main, cue_second) -> list[dict]:
    colour_names = list(COLOURS)
    return [
        {"intents": [m] if s < 0 else [m, s],
         "attributes": {"colour": colour_names[c], "pattern": PATTERNS[p], "shape": SHAPES[h],
                        "product_type": PRODUCT_TYPES[t]},
         "intent_cue_in_text": [cm] if s < 0 else [cm, cs]}
        for m, s, c, p, h, t, cm, cs in zip(main, second, colour, pattern, shape, ptype, cue_main, cue_second)
    ]


def _sample_by_weight(rng: np.random.Generator, values: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    cumulative = np.cumsum(weights)
    picks = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return values[np.minimum(picks, len(values) - 1)]


def render_item_image(attributes: dict, *, size: int = 64, seed: int = 0):
    """A PIL image of the item: its shape, filled with its colour and pattern, on a light background.

    Position and scale jitter (seeded per item) keep images of one look from being pixel-identical.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    fill = COLOURS[attributes["colour"]]
    accent = tuple(int(c * 0.45) for c in fill) if sum(fill) > 300 else tuple(min(255, c + 110) for c in fill)
    layer = Image.new("RGB", (size, size), fill)
    draw = ImageDraw.Draw(layer)
    step = max(4, size // 8)
    pattern = attributes["pattern"]
    if pattern == "stripes":
        for x in range(-size, size, step):
            draw.line([(x, size), (x + size, 0)], fill=accent, width=max(1, step // 3))
    elif pattern == "dots":
        r = max(1, step // 4)
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=accent)
    elif pattern == "checks":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=accent)
    elif pattern == "rings":
        for r in range(step // 2, size, step):
            box = [size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r]
            draw.ellipse(box, outline=accent, width=max(1, step // 4))

    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    r = size * rng.uniform(0.3, 0.4)
    shape = attributes["shape"]
    if shape == "circle":
        mdraw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        mdraw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=255)
    else:
        mdraw.polygon(_polygon(shape, cx, cy, r), fill=255)
    background = Image.new("RGB", (size, size), (228, 226, 220) if attributes["colour"] != "white" else (150, 150, 155))
    return Image.composite(layer, background, mask)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    else:
        corners = {"triangle": 3, "diamond": 4, "hexagon": 6}[shape]
        angles = np.pi / 2 + np.arange(corners) * 2 * np.pi / corners
        radii = np.full(corners, r)
    return [(float(cx + q * np.cos(a)), float(cy - q * np.sin(a))) for q, a in zip(radii, angles)]


def write_images(items_truth: list[dict], source_ids: list[str], data_dir: str | Path, *, size: int, seed: int,
                 index_of: dict[str, int]) -> list[str]:
    """Render one PNG per kept item into `<data_dir>/images/`; returns the relative paths (for the manifest)."""
    from tqdm import tqdm

    from deepinterestgr.artifacts import atomic_path

    out = []
    for source_id in tqdm(source_ids, desc="render synthetic images", disable=len(source_ids) < 2000):
        rel = f"images/{source_id}.png"
        k = index_of[source_id]
        image = render_item_image(items_truth[k]["attributes"], size=size, seed=seed * 1_000_003 + k)
        with atomic_path(Path(data_dir) / rel) as tmp:
            image.save(tmp, format="PNG")
        out.append(rel)
    return out
