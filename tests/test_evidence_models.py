"""Model-backed evidence plugins: packaged weights load completely, tiny models run the real code paths."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.captioners import ImageNetLabelCaptioner, VLMCaptioner
from deepinterestgr.evidence.image_encoders import (
    PackagedEfficientNetLite0Encoder,
    TimmImageEncoder,
    load_in_order,
    packaged_efficientnet_lite0_checkpoint,
)
from deepinterestgr.evidence.text_encoders import HFTextEncoder, PackagedMiniLMEncoder, _packaged_minilm_path


def test_efficientnet_lite0_checkpoint_maps_every_tensor_in_order():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(packaged_efficientnet_lite0_checkpoint(), map_location="cpu", weights_only=True)
    assert load_in_order(model, state) == 247
    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    src = [k for k in state if not k.endswith("num_batches_tracked")]
    for dst, name in ((own[0], src[0]), (own[-1], src[-1])):  # first conv and classifier bias really came over
        assert torch.equal(model.state_dict()[dst], state[name])


def test_load_in_order_refuses_a_mismatched_checkpoint():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = dict(list(torch.load(packaged_efficientnet_lite0_checkpoint(), weights_only=True).items())[:-1])
    with pytest.raises(ValueError, match="tensors"):
        load_in_order(model, state)


def test_packaged_efficientnet_features_are_1280d_and_pretrained():
    enc = PackagedEfficientNetLite0Encoder(image_size=96)
    red, blue = Image.new("RGB", (80, 80), (220, 20, 20)), Image.new("RGB", (80, 80), (20, 20, 220))
    feats = enc.encode([red, blue, red])
    assert feats.shape == (3, 1280)
    assert torch.allclose(feats[0], feats[2]) and not torch.allclose(feats[0], feats[1])
    random_init = TimmImageEncoder(name="tf_efficientnet_lite0", image_size=96, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert not torch.allclose(random_init.encode([red]), feats[:1]), "weights must come from the checkpoint"


def test_label_captioner_names_imagenet_classes():
    cap = ImageNetLabelCaptioner(image_size=96, top_k=2, min_probability=0.0)
    out = cap.caption([Image.new("RGB", (80, 80), (200, 30, 30))], [Item(0, "A", "x")])
    assert out[0].startswith("product photo resembling: ") and out[0].count(",") == 1
    names = out[0].removeprefix("product photo resembling: ").split(", ")
    assert all(n in cap.class_names for n in names)
    strict = ImageNetLabelCaptioner(image_size=96, top_k=2, min_probability=1.01)
    assert strict.caption([Image.new("RGB", (80, 80))], [Item(0, "A", "x")]) == [""]


def test_tiny_vlm_captioner_runs_the_image_text_to_text_path():
    captioner = VLMCaptioner(model="tiny-random-llava", max_new_tokens=5, batch_size=2)
    images = [Image.new("RGB", (64, 48), (i * 60, 100, 30)) for i in range(3)]
    captions = captioner.caption(images, [Item(i, str(i), "t") for i in range(3)])
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    # greedy: the same image gives the same caption, alone or in a left-padded batch
    assert captioner.caption(images[:1], [Item(0, "0", "t")]) == captions[:1]
    prompt = captioner.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": captioner.prompt}]}],
        add_generation_prompt=True, tokenize=False)
    assert "<image>" in prompt and "recommender" in prompt


def test_packaged_minilm_equals_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = ["OPI Nail Lacquer, Simmer and Shimmer", "gift for a new mother", ""]
    ours = PackagedMiniLMEncoder().encode(texts)
    reference = sentence_transformers.SentenceTransformer(_packaged_minilm_path(), device="cpu").encode(texts)
    assert torch.allclose(ours, torch.tensor(reference), atol=1e-5)


def test_hf_text_encoder_checks_dim_against_the_model():
    with pytest.raises(ValueError, match="hidden size is 384"):
        HFTextEncoder(model=_packaged_minilm_path(), dim=768)


def test_local_weights_are_keyed_on_their_content_not_their_folder_name_or_size(tmp_path):
    """Two fine-tunes of one architecture in folders of one name, files of one size: different cache keys."""
    from deepinterestgr.evidence.cache import model_identity
    from deepinterestgr.evidence.image_encoders import TimmImageEncoder

    a, b = tmp_path / "a" / "finetune", tmp_path / "b" / "finetune"
    for folder, byte in ((a, b"\x01"), (b, b"\x02")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(byte * 1024)
        (folder / "config.json").write_text("{}")
    assert model_identity(str(a)) != model_identity(str(b))
    assert model_identity(str(a)).startswith("local:finetune:sha256:")
    assert model_identity("org/hub-model") == "org/hub-model"
    (b / "model.safetensors").write_bytes(b"\x01" * 1024)  # same content again: same key
    assert model_identity(str(a)) == model_identity(str(b))

    state = TimmImageEncoder(name="tf_efficientnet_lite0").model.state_dict()
    for name, scale in (("x", 1.0), ("y", 2.0)):
        (tmp_path / name).mkdir()
        torch.save({k: v * scale for k, v in state.items()}, tmp_path / name / "w.pth")
    keys = {TimmImageEncoder(name="tf_efficientnet_lite0",
                             checkpoint=str(tmp_path / n / "w.pth")).describe()["checkpoint"]
            for n in ("x", "y")}
    assert len(keys) == 2 and all(k.startswith("w.pth:sha256:") for k in keys)
