"""CMSA caption branch: a vision-language model writes a recommendation-oriented caption of the main image.

`vlm-captioner` is the paper's path (Qwen2.5-VL-7B-Instruct there); `label-captioner` is the offline default and is
named for what it is: the top ImageNet classes of EfficientNet-Lite0, phrased as a short caption."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.cache import model_identity
from deepinterestgr.evidence.contracts import Captioner

log = logging.getLogger(__name__)

CAPTION_PROMPT = (
    "Describe this product image for a shopping recommender in one or two sentences: what the product is, its "
    "look (colour, packaging, size), and who or what occasion it suits. Do not invent brand names."
)


class VLMCaptioner(Captioner):
    """transformers image-text-to-text model (AutoModelForImageTextToText + AutoProcessor), the model's chat
    template with one image and the recommendation-oriented prompt, greedy decoding (temperature 0).

    `model`: hub id or local folder (e.g. Qwen/Qwen2.5-VL-7B-Instruct); `tiny-random-llava` builds a random tiny
    LLaVA offline (tests only: it produces noise)."""

    def __init__(
        self,
        *,
        model: str,
        prompt: str = CAPTION_PROMPT,
        max_new_tokens: int = 64,
        batch_size: int = 4,
        image_size: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.model_id, self.prompt, self.max_new_tokens = model, prompt, max_new_tokens
        self.batch_size, self.image_size = batch_size, image_size
        if model == "tiny-random-llava":
            from deepinterestgr.evidence.tiny_models import tiny_llava

            self.processor, self.model = tiny_llava()
        else:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
        self.model.to(device).eval()
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # batched generation: every prompt must end where generation starts
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def for_contract_test(cls) -> "VLMCaptioner":
        return cls(model="tiny-random-llava", max_new_tokens=6, batch_size=2)

    def describe(self) -> dict:
        return {"class": type(self).__name__, "model": model_identity(self.model_id), "prompt": self.prompt,
                "max_new_tokens": self.max_new_tokens, "image_size": self.image_size, "decoding": "greedy"}

    @torch.inference_mode()
    def caption(self, images: Sequence, items: Sequence[Item]) -> list[str]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch_images = [img.convert("RGB") for img in images[start : start + self.batch_size]]
            if self.image_size:
                batch_images = [img.resize((self.image_size, self.image_size)) for img in batch_images]
            inputs = self.processor(images=batch_images, text=[prompt] * len(batch_images), return_tensors="pt",
                                    padding=True).to(self.model.device)
            generated = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                            pad_token_id=self.processor.tokenizer.pad_token_id)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            captions.extend(t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True))
        return captions


class ImageNetLabelCaptioner(Captioner):
    """Not a VLM: the `top_k` ImageNet-1k classes (EfficientNet-Lite0, packaged weights) with probability ≥
    `min_probability`, phrased "product photo resembling: lipstick, perfume". Cheap and offline; it sees object
    categories, not usage. Images where no class reaches the threshold get an empty caption."""

    def __init__(self, *, top_k: int = 3, min_probability: float = 0.05, image_size: int = 224,
                 batch_size: int = 32, device: str = "cpu") -> None:
        from timm.data import ImageNetInfo

        from deepinterestgr.evidence.image_encoders import PackagedEfficientNetLite0Encoder

        self.top_k, self.min_probability = top_k, min_probability
        self.network = PackagedEfficientNetLite0Encoder(image_size=image_size, batch_size=batch_size, device=device,
                                                        with_classifier=True)
        info = ImageNetInfo()
        # "tench, Tinca tinca" -> "tench": the first synonym reads best in a caption
        self.class_names = [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]

    @classmethod
    def for_contract_test(cls) -> "ImageNetLabelCaptioner":
        return cls(image_size=64, min_probability=0.0)

    def describe(self) -> dict:
        return {"class": type(self).__name__, "top_k": self.top_k, "min_probability": self.min_probability,
                "network": self.network.describe()}

    def caption(self, images: Sequence, items: Sequence[Item]) -> list[str]:
        if not images:
            return []
        probs = torch.softmax(self.network.classify(images), dim=1)
        top = probs.topk(self.top_k, dim=1)
        captions = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist()):
            names = [self.class_names[j] for p, j in zip(values, indices) if p >= self.min_probability]
            captions.append(f"product photo resembling: {', '.join(names)}" if names else "")
        return captions
