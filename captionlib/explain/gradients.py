"""Gradient explanations of every caption word: gradient, gradient × input, guided
backprop, Grad-CAM and guided Grad-CAM (chapter 8, book/method.md §6).

The target of word t is its logit at step t with the caption teacher-forced, as for LRP.
Every method needs the gradient of that logit with respect to the pixels, the encoder's
last feature map F (B, C, h, w) or the input word embeddings. All T−1 words are explained
with ONE forward pass of CNN and decoder and ONE vectorised backward pass
(`torch.autograd.grad(..., is_grads_batched=True)`, as in `captionlib.explain.lrp`).
`captum=True` instead runs captum's attribution classes word by word on `WordTarget`
(image → logit of word t); tests hold both paths equal.

- "gradient": ∂y_t/∂x per pixel and colour channel.
- "gradient_x_input": x ⊙ ∂y_t/∂x.
- "guided_backprop": every ReLU of the CNN passes back only positive gradients at positive
  inputs (grad_in = max(grad_out, 0) · 1[x > 0]).
- "gradcam": weights w_c = mean_ij ∂y_t/∂F_cij; signed map Σ_c w_c F_c kept in
  extras["gradcam_signed"]; `locations` and `heatmap` are its ReLU (the Grad-CAM map),
  upsampled to the image (nearest by default).
- "guided_gradcam": guided backprop ⊙ the upsampled ReLU'd Grad-CAM map.

Word explanations (book/method.md §6): the relevance of input word i for word t is
Σ_d ∂y_t/∂E(w_i)_d; for gradient × input Σ_d E(w_i)_d ∂y_t/∂E(w_i)_d.

`constant_attention=True` gives the paper's *modified* gradients: the attention weights
(α, β) and the gates (the sentinel gate, the LSTM gates, captioner B's context gate) are
constants in the backward pass, exactly the quantities that LRP treats as constants, while
linear layers and tanh keep their true gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from captionlib import ops
from captionlib.data.vocab import Vocabulary
from captionlib.explain.attention import UPSAMPLING
from captionlib.explain.lrp import (
    Explanation,
    check_captions,
    explained_logits,
    explaining,
    word_seeds,
)
from captionlib.models.base import Captioner
from captionlib.models.encoder import to_grid

GRADIENT_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "gradcam", "guided_gradcam")
GUIDED = ("guided_backprop", "guided_gradcam")


# --- the modified-gradient mode ------------------------------------------------------------------


@contextlib.contextmanager
def constant_attention_mode() -> Iterator[None]:
    """Inside the block the models' attention weights and gates are constants in the backward
    pass (forward values unchanged); linear layers and tanh keep their true gradients.

    The authors' "modified gradients" (book/method.md §6), through
    `captionlib.ops.constant_gates_mode`.
    """
    with ops.constant_gates_mode():
        yield


# --- guided backprop -----------------------------------------------------------------------------


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes max(grad, 0) where the input was positive."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return grad_output.clamp(min=0) * (x > 0).to(grad_output.dtype)


@contextlib.contextmanager
def guided_relus(module: nn.Module) -> Iterator[None]:
    """Every `nn.ReLU` inside `module` uses the guided-backprop backward within the block."""

    def hook(_: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return _GuidedReLU.apply(inputs[0])

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- the word-target wrapper (captum) -----------------------------------------------------------


class WordTarget(nn.Module):
    """image → logit of word t of a teacher-forced caption (captum's forward function).

    cnn: the encoder's feature CNN (images (B, 3, H, W) → F (B, C, h, w)); model: the
    captioner; caption_ids: (B, T). `word` (0 ≤ word < T−1) selects the explained word:
    forward returns logits[:, word, caption_ids[:, word + 1]], shape (B,).
    """

    def __init__(self, cnn: nn.Module, model: Captioner, caption_ids: Tensor, word: int = 0):
        super().__init__()
        if not 0 <= word < caption_ids.shape[1] - 1:
            raise ValueError(f"word must be in [0, {caption_ids.shape[1] - 1}), got {word}")
        self.cnn = cnn
        self.model = model
        self.caption_ids = caption_ids
        self.word = word

    def forward(self, images: Tensor) -> Tensor:
        feature_map = self.cnn(images)  # (B, C, h, w)
        logits = self.model(to_grid(feature_map), self.caption_ids).logits  # (B, K, V)
        return explained_logits(logits, self.caption_ids)[:, self.word]  # (B,)


def _captum_pixels(
    method: str, cnn: nn.Module, model: Captioner, images: Tensor, caption_ids: Tensor
) -> tuple[Tensor, Tensor | None]:
    """captum, one word at a time: pixel attributions (B, K, 3, H, W) and for Grad-CAM-based
    methods the signed Grad-CAM maps (B, K, h, w)."""
    from captum.attr import GuidedBackprop, GuidedGradCam, InputXGradient, LayerGradCam, Saliency

    layer = _output_layer(cnn)
    pixels, cams = [], []
    for word in range(caption_ids.shape[1] - 1):
        target = WordTarget(cnn, model, caption_ids, word)
        inputs = images.detach().requires_grad_()
        if method == "gradient":
            pixels.append(Saliency(target).attribute(inputs, abs=False))
        elif method == "gradient_x_input":
            pixels.append(InputXGradient(target).attribute(inputs))
        elif method == "guided_backprop":
            pixels.append(GuidedBackprop(target).attribute(inputs))
        else:
            cam = LayerGradCam(target, layer).attribute(inputs, relu_attributions=False)
            cams.append(cam[:, 0])  # (B, h, w)
            if method == "guided_gradcam":
                pixels.append(GuidedGradCam(target, layer).attribute(inputs))
    stacked = torch.stack(pixels, dim=1) if pixels else torch.empty(0)  # (B, K, 3, H, W)
    cam_maps = torch.stack(cams, dim=1) if cams else None  # (B, K, h, w)
    return stacked, cam_maps


def _output_layer(cnn: nn.Module) -> nn.Module:
    """The module whose output is F: the last child of a Sequential, else the CNN itself."""
    if isinstance(cnn, nn.Sequential) and len(cnn) > 0:
        return cnn[-1]
    return cnn


# --- the batched autograd path --------------------------------------------------------------------


@dataclass
class _Gradients:
    """The gradients of the K = T−1 explained logits of B captions (one backward pass).

    logits (B, K); pixels: the images (B, 3, H, W) and grad_pixels (B, K, 3, H, W);
    feature_map F (B, C, h, w) and grad_map (B, K, C, h, w); embeddings (B, K, E) and
    grad_words (B, K, K, E).
    """

    logits: Tensor
    pixels: Tensor
    grad_pixels: Tensor
    feature_map: Tensor
    grad_map: Tensor
    embeddings: Tensor
    grad_words: Tensor


def _batched_gradients(
    cnn: nn.Module, model: Captioner, images: Tensor, caption_ids: Tensor, guided: bool
) -> _Gradients:
    """One forward, one vectorised backward over the K = T−1 words. With guided=True the
    CNN's ReLUs use the guided backward (∂y/∂F is unchanged: they lie below F)."""
    pixels = images.detach().requires_grad_()
    embeddings = model.embedding(caption_ids[:, :-1]).detach().requires_grad_()  # (B, K, E)
    guide = guided_relus(cnn) if guided else contextlib.nullcontext()
    with torch.enable_grad(), guide:
        feature_map = cnn(pixels)  # (B, C, h, w)
        logits = model(to_grid(feature_map), caption_ids, embeddings=embeddings).logits
        explained = explained_logits(logits, caption_ids)  # (B, K)
        grad_pixels, grad_map, grad_words = torch.autograd.grad(
            explained,
            (pixels, feature_map, embeddings),
            word_seeds(explained),
            is_grads_batched=True,
        )  # (K, B, 3, H, W), (K, B, C, h, w), (K, B, K, E)
    return _Gradients(
        logits=explained.detach(),
        pixels=pixels.detach(),
        grad_pixels=grad_pixels.transpose(0, 1),
        feature_map=feature_map.detach(),
        grad_map=grad_map.transpose(0, 1),
        embeddings=embeddings.detach(),
        grad_words=grad_words.transpose(0, 1),
    )


def gradcam_maps(feature_map: Tensor, gradients: Tensor) -> Tensor:
    """Signed Grad-CAM: F (B, C, h, w) and ∂y/∂F (B, K, C, h, w) → Σ_c w_c F_c (B, K, h, w)
    with w_c the spatial mean of ∂y/∂F_c."""
    weights = gradients.mean(dim=(3, 4), keepdim=True)  # (B, K, C, 1, 1)
    return (weights * feature_map.unsqueeze(1)).sum(2)


def _upsample(maps: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """(B, K, h, w) → (B, K, H, W)."""
    options = {"align_corners": False} if mode == "bilinear" else {}
    return functional.interpolate(maps, size=size, mode=mode, **options)


def _assemble(
    method: str,
    grads: _Gradients,
    caption_ids: Tensor,
    pad_id: int | None,
    upsampling: str,
    captum_result: tuple[Tensor, Tensor | None] | None = None,
) -> Explanation:
    """Build one method's Explanation from the gradients (and, optionally, captum's pixel
    maps and signed Grad-CAM maps, which then replace the autograd ones)."""
    image_size = (grads.pixels.shape[2], grads.pixels.shape[3])
    extras: dict[str, Tensor] = {}
    heatmap: Tensor
    result_pixels: Tensor | None
    if method in ("gradcam", "guided_gradcam"):
        signed = gradcam_maps(grads.feature_map, grads.grad_map)  # (B, K, h, w)
        if captum_result is not None and captum_result[1] is not None:
            signed = captum_result[1]
        cam = signed.clamp(min=0)
        extras["gradcam_signed"] = signed
        locations = cam.flatten(2)  # (B, K, N)
        upsampled = _upsample(cam, image_size, upsampling)  # (B, K, H, W)
        if method == "gradcam":
            result_pixels = None  # a map on the grid, not per colour channel
            heatmap = upsampled
        else:
            result_pixels = grads.grad_pixels * upsampled.unsqueeze(2)
            if captum_result is not None:
                result_pixels = captum_result[0]
            heatmap = result_pixels.sum(2)
    else:
        result_pixels = grads.grad_pixels
        scores = grads.grad_map  # (B, K, C, h, w)
        if method == "gradient_x_input":
            result_pixels = grads.grad_pixels * grads.pixels.unsqueeze(1)  # (B, K, 3, H, W)
            scores = grads.grad_map * grads.feature_map.unsqueeze(1)
        if captum_result is not None:
            result_pixels = captum_result[0]
        locations = scores.sum(2).flatten(2)  # (B, K, N)
        heatmap = result_pixels.sum(2)
    word_scores = grads.grad_words  # (B, K, K, E)
    if method == "gradient_x_input":
        word_scores = grads.grad_words * grads.embeddings.unsqueeze(1)
    words = caption_ids[:, 1:]
    mask = torch.ones_like(words, dtype=torch.bool) if pad_id is None else words != pad_id
    return Explanation(
        method=method,
        caption_ids=caption_ids,
        words=words,
        logits=grads.logits,
        mask=mask,
        locations=locations,
        grid_size=(grads.feature_map.shape[2], grads.feature_map.shape[3]),
        pixels=result_pixels,
        heatmap=heatmap,
        word_relevance=word_scores.sum(-1),
        extras=extras,
    )


def explain_gradient_family(
    model: Captioner,
    caption_ids: Tensor,
    *,
    images: Tensor | None = None,
    encoder: nn.Module | None = None,
    features: Tensor | None = None,
    methods: Sequence[str] = GRADIENT_METHODS,
    constant_attention: bool = False,
    captum: bool = False,
    upsampling: str = "nearest",
    pad_id: int | None = Vocabulary.PAD_ID,
) -> dict[str, Explanation]:
    """Several gradient methods at the cost of at most two backward passes (chapter 8).

    The plain methods share one vectorised backward, the guided ones a second one; returns
    method → Explanation (see `explain_gradients` for the arguments and the fields).
    """
    for method in methods:
        if method not in GRADIENT_METHODS:
            raise ValueError(f"method must be one of {GRADIENT_METHODS}, got {method!r}")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
    if features is not None or images is None or encoder is None:
        raise ValueError("gradient methods need images and the encoder (not features)")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    check_captions(model, caption_ids)
    parameter = next(model.parameters())
    caption_ids = caption_ids.to(parameter.device)
    images = images.to(device=parameter.device, dtype=parameter.dtype)
    cnn = getattr(encoder, "features", encoder)
    mode = constant_attention_mode() if constant_attention else contextlib.nullcontext()
    results: dict[str, Explanation] = {}
    with explaining(model, encoder), mode:
        for guided in (False, True):
            chosen = [m for m in methods if (m in GUIDED) == guided]
            if not chosen:
                continue
            grads = _batched_gradients(cnn, model, images, caption_ids, guided)
            for method in chosen:
                from_captum = None
                if captum:
                    from_captum = _captum_pixels(method, cnn, model, images, caption_ids)
                results[method] = _assemble(
                    method, grads, caption_ids, pad_id, upsampling, from_captum
                )
    return {method: results[method] for method in methods}


def explain_gradients(
    model: Captioner,
    caption_ids: Tensor,
    *,
    method: str = "gradient",
    images: Tensor | None = None,
    encoder: nn.Module | None = None,
    features: Tensor | None = None,
    constant_attention: bool = False,
    captum: bool = False,
    upsampling: str = "nearest",
    pad_id: int | None = Vocabulary.PAD_ID,
) -> Explanation:
    """Gradient explanations of every word of B teacher-forced captions (chapter 8).

    method: one of GRADIENT_METHODS. images (B, 3, H, W) with the encoder (its `.features`
    CNN, or the CNN itself) are required: every method here explains pixels or the CNN's
    last feature map. constant_attention: the paper's modified gradients (attention weights
    and gates constant). captum: compute the pixel maps with captum, one word at a time
    (same numbers; slower). upsampling: "nearest" or "bilinear" for the Grad-CAM map.

    Returns an Explanation with pixels (B, K, 3, H, W) (None for "gradcam"); heatmap
    (B, K, H, W): the pixels summed over colour channels, or the upsampled Grad-CAM map for
    "gradcam"; locations (B, K, N): ∂y/∂F (F ⊙ ∂y/∂F for gradient × input) summed over
    channels, or the ReLU'd Grad-CAM map for the CAM methods; word_relevance (B, K, K); and
    extras "gradcam_signed" (B, K, h, w) for the CAM methods.
    """
    if method not in GRADIENT_METHODS:
        raise ValueError(f"method must be one of {GRADIENT_METHODS}, got {method!r}")
    return explain_gradient_family(
        model,
        caption_ids,
        images=images,
        encoder=encoder,
        features=features,
        methods=(method,),
        constant_attention=constant_attention,
        captum=captum,
        upsampling=upsampling,
        pad_id=pad_id,
    )[method]


def gradient_word_relevance(
    model: Captioner, features: Tensor, caption_ids: Tensor
) -> dict[str, Tensor]:
    """Word relevance of the plain gradient and of gradient × input from the decoder alone
    (chapter 9).

    features: (B, N, C) grid features; caption_ids: (B, T). Returns "gradient" Σ_d ∂y_t/∂E_d
    and "gradient_x_input" Σ_d E_d ∂y_t/∂E_d, each (B, K, K) as `Explanation.word_relevance`
    of `explain_gradient_family` (the same numbers without the pixel backward).
    """
    embeddings = model.embedding(caption_ids[:, :-1]).detach().requires_grad_()  # (B, K, E)
    with explaining(model), torch.enable_grad():
        logits = model(features.detach(), caption_ids, embeddings=embeddings).logits
        explained = explained_logits(logits, caption_ids)  # (B, K)
        (grads,) = torch.autograd.grad(
            explained, (embeddings,), word_seeds(explained), is_grads_batched=True
        )  # (K, B, K, E)
    grads = grads.transpose(0, 1)  # (B, K, K, E)
    return {
        "gradient": grads.sum(-1),
        "gradient_x_input": (grads * embeddings.detach().unsqueeze(1)).sum(-1),
    }


def gradient_method(name: str) -> Callable[..., Explanation]:
    """The registry entry (`captionlib.explain.api.METHODS`) of gradient method `name`
    (chapter 8)."""
    if name not in GRADIENT_METHODS:
        raise ValueError(f"method must be one of {GRADIENT_METHODS}, got {name!r}")

    def run(model: Captioner, caption_ids: Tensor, **options: Any) -> Explanation:
        if "method" in options:
            raise ValueError(f"method {name!r} sets `method` itself")
        return explain_gradients(model, caption_ids, method=name, **options)

    run.__name__ = f"explain_{name}"
    run.__doc__ = f"`explain_gradients` with method={name!r} (a registry entry)."
    return run
