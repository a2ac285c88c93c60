"""The models the emulator serves: their inputs, outputs, metadata and prices.

Inputs are pydantic models, so a bad input fails the way fal's runners fail it (422 with a
``detail`` list) and ``GET /v1/models?expand=openapi-3.0`` can publish a real schema. Each model's
``generate`` turns a validated input into fal's output JSON, the media files behind its URLs and
the billed units.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.media import MediaFile, Mp4Video, PngImage, WavAudio, wav_size_for

JSON = dict[str, Any]
ERRORS_DOCS_URL = "https://docs.fal.ai/errors"


class ModelError(Exception):
    """The model refused its input: answered as 422 ``{"detail": [...]}`` (fal's model errors)."""

    def __init__(self, detail: list[JSON]) -> None:
        super().__init__(detail[0]["msg"] if detail else "invalid input")
        self.detail = detail


def model_error(field_name: str, error_type: str, msg: str, **ctx: Any) -> ModelError:
    item: JSON = {
        "loc": ["body", field_name],
        "msg": msg,
        "type": error_type,
        "url": f"{ERRORS_DOCS_URL}#{error_type}",
    }
    if ctx:
        item["ctx"] = ctx
    return ModelError([item])


def validation_detail(exc: ValidationError) -> list[JSON]:
    """pydantic errors in the shape fal's (FastAPI) runners answer: loc under "body"."""
    return [
        {"loc": ["body", *err["loc"]], "msg": err["msg"][:1].lower() + err["msg"][1:], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


@dataclass(frozen=True)
class FetchedInput:
    """What the runner learnt from downloading an input URL."""

    url: str
    size: int
    content_type: str | None
    dimensions: tuple[int, int] | None


@dataclass(frozen=True)
class RunContext:
    request_id: str
    files_url: str  # "{cdn}/files/{request_id}"
    config: EmulatorConfig
    inputs: dict[str, FetchedInput]
    inference_time_s: float
    rng: random.Random

    def url(self, media: MediaFile) -> str:
        return f"{self.files_url}/{media.name}"


@dataclass(frozen=True)
class Generated:
    output: JSON
    files: tuple[MediaFile, ...]
    units: float


class _Input(BaseModel):
    # fal's runners ignore fields they do not know.
    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------- shared shapes

ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}


class ImageSize(BaseModel):
    width: int = Field(ge=64, le=14142)
    height: int = Field(ge=64, le=14142)


class Image(BaseModel):
    url: str
    width: int
    height: int
    content_type: str


class File(BaseModel):
    url: str
    content_type: str
    file_name: str
    file_size: int
    width: int | None = None
    height: int | None = None


def _file(ctx: RunContext, media: MediaFile, dimensions: tuple[int, int] | None = None) -> JSON:
    width, height = dimensions or (None, None)
    return File(
        url=ctx.url(media),
        content_type=media.content_type,
        file_name=media.name,
        file_size=media.size,
        width=width,
        height=height,
    ).model_dump(exclude_none=True)


def _seed(requested: int | None, ctx: RunContext) -> int:
    return requested if requested is not None else ctx.rng.randrange(2**31)


# --------------------------------------------------------------------------- text to image


class FluxDevInput(_Input):
    prompt: str
    image_size: ImageSizePreset | ImageSize = "landscape_4_3"
    num_inference_steps: int = Field(default=28, ge=1, le=50)
    seed: int | None = None
    guidance_scale: float = Field(default=3.5, ge=1, le=20)
    num_images: int = Field(default=1, ge=1, le=4)
    enable_safety_checker: bool = True


class FastSdxlInput(_Input):
    prompt: str
    negative_prompt: str = ""
    image_size: ImageSizePreset | ImageSize = "square_hd"
    num_inference_steps: int = Field(default=25, ge=1, le=65)
    seed: int | None = None
    num_images: int = Field(default=1, ge=1, le=8)


class TextToImageOutput(BaseModel):
    images: list[Image]
    timings: dict[str, float]
    seed: int
    has_nsfw_concepts: list[bool]
    prompt: str


def _generate_images(request: BaseModel, ctx: RunContext) -> Generated:
    assert isinstance(request, FluxDevInput | FastSdxlInput)
    size = request.image_size
    width, height = IMAGE_SIZES[size] if isinstance(size, str) else (size.width, size.height)
    seed = _seed(request.seed, ctx)
    images = [
        PngImage(name=f"image-{index}.png", width=width, height=height, colour=seed + index)
        for index in range(request.num_images)
    ]
    output = TextToImageOutput(
        images=[
            Image(url=ctx.url(image), width=width, height=height, content_type="image/png")
            for image in images
        ],
        timings={"inference": ctx.inference_time_s},
        seed=seed,
        has_nsfw_concepts=[False] * len(images),
        prompt=request.prompt,
    )
    return Generated(output=output.model_dump(), files=tuple(images), units=len(images))


# --------------------------------------------------------------------------- upscaler

_DEFAULT_INPUT_DIMENSIONS = (512, 512)  # when the input is not a PNG we can read the size of


class ClarityUpscalerInput(_Input):
    image_url: str
    prompt: str = "masterpiece, best quality, highres"
    upscale_factor: float = Field(default=2, ge=1, le=4)
    negative_prompt: str = "(worst quality, low quality, normal quality:2)"
    creativity: float = Field(default=0.35, ge=0, le=1)
    resemblance: float = Field(default=0.6, ge=0, le=1)
    seed: int | None = None


class UpscalerOutput(BaseModel):
    image: File
    seed: int
    timings: dict[str, float]


def _generate_upscale(request: BaseModel, ctx: RunContext) -> Generated:
    assert isinstance(request, ClarityUpscalerInput)
    source = ctx.inputs["image_url"].dimensions or _DEFAULT_INPUT_DIMENSIONS
    width, height = (round(side * request.upscale_factor) for side in source)
    limit = ctx.config.max_image_side
    if max(width, height) > limit:
        raise model_error(
            "image_url",
            "image_too_large",
            f"Image too large: the upscaled image would be {width}x{height}, the maximum is {limit}x{limit}.",
            max_width=limit,
            max_height=limit,
        )
    seed = _seed(request.seed, ctx)
    image = PngImage(name="upscaled.png", width=width, height=height, colour=seed)
    output = {
        "image": _file(ctx, image, (width, height)),
        "seed": seed,
        "timings": {"inference": ctx.inference_time_s},
    }
    return Generated(
        output=UpscalerOutput.model_validate(output).model_dump(exclude_none=True), files=(image,), units=1
    )


# --------------------------------------------------------------------------- video


class KlingTextToVideoInput(_Input):
    prompt: str = Field(max_length=2500)
    duration: Literal["5", "10"] = "5"
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    negative_prompt: str = "blur, distort, and low quality"
    cfg_scale: float = Field(default=0.5, ge=0, le=1)


class VideoOutput(BaseModel):
    video: File


def _generate_video(request: BaseModel, ctx: RunContext) -> Generated:
    assert isinstance(request, KlingTextToVideoInput)
    seconds = int(request.duration)
    video = Mp4Video(name="output.mp4", size=ctx.config.video_bytes, duration_s=seconds)
    output = VideoOutput.model_validate({"video": _file(ctx, video)})
    return Generated(output=output.model_dump(exclude_none=True), files=(video,), units=seconds)


# --------------------------------------------------------------------------- audio


class StableAudioInput(_Input):
    prompt: str
    seconds_start: int = Field(default=0, ge=0, le=47)
    seconds_total: int = Field(default=30, ge=1, le=47)
    steps: int = Field(default=100, ge=1, le=1000)


class AudioOutput(BaseModel):
    audio_file: File


def _generate_audio(request: BaseModel, ctx: RunContext) -> Generated:
    assert isinstance(request, StableAudioInput)
    size = ctx.config.audio_bytes or wav_size_for(request.seconds_total)
    audio = WavAudio(name="audio.wav", size=size - size % 2)
    output = AudioOutput.model_validate({"audio_file": _file(ctx, audio)})
    return Generated(output=output.model_dump(exclude_none=True), files=(audio,), units=request.seconds_total)


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class ModelSpec:
    endpoint_id: str
    display_name: str
    category: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    generate: Callable[[BaseModel, RunContext], Generated]
    unit: str
    unit_price: float
    # Units billed by a typical call, for "historical_api_price" estimates.
    typical_units: float
    url_fields: tuple[str, ...] = ()
    status: Literal["active", "deprecated"] = "active"
    tags: tuple[str, ...] = ()
    license_type: Literal["commercial", "research", "private"] = "commercial"
    date: str = "2024-08-01T00:00:00Z"
    updated_at: str = "2026-06-01T00:00:00Z"
    duration_estimate_min: float = 0.2
    # Private apps (a user's own workflow) run but are not listed by GET /v1/models.
    listed: bool = True

    def validate_input(self, payload: Any) -> BaseModel:
        try:
            return self.input_model.model_validate(payload)
        except ValidationError as exc:
            raise ModelError(validation_detail(exc)) from exc


FLUX_DEV = ModelSpec(
    endpoint_id="fal-ai/flux/dev",
    display_name="FLUX.1 [dev]",
    category="text-to-image",
    description="FLUX.1 [dev], a 12 billion parameter flow transformer that generates images from text.",
    input_model=FluxDevInput,
    output_model=TextToImageOutput,
    generate=_generate_images,
    unit="image",
    unit_price=0.025,
    typical_units=1,
    tags=("flux", "text-to-image"),
)

MODELS: tuple[ModelSpec, ...] = (
    FLUX_DEV,
    ModelSpec(
        endpoint_id="fal-ai/fast-sdxl",
        display_name="Stable Diffusion XL",
        category="text-to-image",
        description="Run SDXL at the speed of light. Superseded by newer models.",
        input_model=FastSdxlInput,
        output_model=TextToImageOutput,
        generate=_generate_images,
        unit="image",
        unit_price=0.0025,
        typical_units=1,
        status="deprecated",
        tags=("sdxl",),
        date="2023-11-01T00:00:00Z",
        updated_at="2025-09-01T00:00:00Z",
    ),
    ModelSpec(
        endpoint_id="fal-ai/clarity-upscaler",
        display_name="Clarity Upscaler",
        category="image-to-image",
        description="Upscale images with high fidelity and add details.",
        input_model=ClarityUpscalerInput,
        output_model=UpscalerOutput,
        generate=_generate_upscale,
        unit="image",
        unit_price=0.03,
        typical_units=1,
        url_fields=("image_url",),
        tags=("upscaling",),
    ),
    ModelSpec(
        endpoint_id="fal-ai/kling-video/v2/master/text-to-video",
        display_name="Kling 2.0 Master",
        category="text-to-video",
        description="Generate videos from text prompts with Kling 2.0 Master.",
        input_model=KlingTextToVideoInput,
        output_model=VideoOutput,
        generate=_generate_video,
        unit="second",
        unit_price=0.28,
        typical_units=5,
        tags=("video", "pro"),
        duration_estimate_min=4.0,
    ),
    ModelSpec(
        endpoint_id="fal-ai/stable-audio",
        display_name="Stable Audio Open",
        category="text-to-audio",
        description="Generate sound effects and music samples from text with Stable Audio Open.",
        input_model=StableAudioInput,
        output_model=AudioOutput,
        generate=_generate_audio,
        unit="second",
        unit_price=0.0006,
        typical_units=30,
        tags=("audio",),
        license_type="research",
        duration_estimate_min=0.5,
    ),
    # A user's own workflow around FLUX.1 [dev]: exercises the workflows namespace in queue URLs.
    replace(
        FLUX_DEV,
        endpoint_id="workflows/falflow/text-to-image",
        display_name="falflow text-to-image workflow",
        description="A private workflow wrapping FLUX.1 [dev].",
        tags=(),
        license_type="private",
        listed=False,
    ),
)


class Catalogue:
    def __init__(self, models: Iterable[ModelSpec] = MODELS) -> None:
        self._models = {model.endpoint_id: model for model in models}

    def get(self, endpoint_id: str) -> ModelSpec | None:
        return self._models.get(endpoint_id)

    def listed(self) -> list[ModelSpec]:
        return [model for model in self._models.values() if model.listed]
