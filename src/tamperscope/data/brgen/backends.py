"""Back ends of the BR-Gen pipeline: built-in (no weights) and models loaded from local folders (paper 001 §3.2).

``--backend builtin``  regions from :class:`~.regions.BuiltinRegions`, the six built-in forgers, no alignment.
``--backend models``   real models read with ``from_pretrained(local_dir)`` (never downloaded); each stage uses
                       a model when its folder is given and reports what it used:

- ``detector=DIR`` + ``sam=DIR``: Perception. A transformers zero-shot detector (GroundingDINO as in BR-Gen,
  or OWL-ViT / OWLv2) finds the box of a COCO thing/stuff category with the highest score (at least 0.25 for
  GroundingDINO, 0.1 for OWL-ViT; otherwise the category is taken as absent and the sample retries); SAM
  (``SamModel``; the paper uses SAM2, whose transformers processor needs torchvision, which this project
  avoids) turns the box into a mask; Background = the inverse of a thing mask. The mask gets the
  same open/close + feather cleaning as the built-in regions. Without these two: built-in regions.
- ``inpaint=DIR``: Creation. A diffusers inpainting pipeline (``AutoPipelineForInpainting``: SD / SDXL
  inpainting and compatible) run on the photo resized to a multiple of 8, output resized back and
  composited into the mask (paste-back, so pixels outside the mask stay the photo's). Its method tag comes
  from the pipeline class (``SDXLInpaint``, ``SDInpaint``, ...). Prompts from :mod:`.prompts`.
- ``taesd=DIR``: Creation, the pseudoLDM stand-in with a real latent autoencoder: ``taesdLDM`` pastes the
  pseudoLDM source content into the mask, encodes and decodes only the mask's bounding box (8-px margin,
  reflect-padded to a multiple of 8) with a diffusers ``AutoencoderTiny`` (TAESD) and composites it back.
- ``clip=DIR``: Evaluation (c), for methods that take a prompt (the diffusion inpainter; paper 001
  §3.2.3: prompt alignment of the prompt-based methods). CLIP cosine similarity between the prompt and the
  crop of the mask's bounding box; a forgery below ``min_score`` (default 0.2, the paper says only "very low")
  is rejected. Mask-only methods record ``clip_score: null``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ...errors import UserError
from .creation import DEFAULT_METHODS, Creator, builtin_creators, composite, resynthesis_source
from .prompts import STUFF_CATEGORIES, THING_CATEGORIES
from .regions import BuiltinRegions, Region, finish_mask

MODEL_KEYS = ("detector", "sam", "inpaint", "taesd", "clip")
DETECTOR_TYPES = ("grounding-dino", "owlvit", "owlv2")
# minimum box score; below it the category counts as absent and the sample retries with another category
DEFAULT_BOX_THRESHOLDS = {"grounding-dino": 0.25, "owlvit": 0.1, "owlv2": 0.1}


@dataclass
class Backends:
    """What each stage runs: the region proposer, the forgers, the default methods and the aligner."""

    regions: object
    creators: dict[str, Creator]
    default_methods: tuple[str, ...]
    aligner: object | None = None
    info: dict = field(default_factory=dict)


def _load(kind: str, path: str, loader):
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{kind} model folder {path}: not a folder (models are read from local folders only)")
    try:
        return loader(folder)
    except UserError:
        raise
    except Exception as exc:  # any loader failure becomes one readable line naming the folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{kind} model folder {path}: cannot load the model ({first[:200]})") from exc


# --------------------------------------------------------------------------------------------- perception


class GroundedSAMRegions:
    """Grounded detection (highest-confidence box for a category prompt) + SAM box-to-mask (paper §3.2.1)."""

    name = "grounded-sam"
    decides_area = True  # the detector and SAM decide the area: the built-in area policy never rejects a mask

    def __init__(self, detector_dir: str, sam_dir: str, device: str = "cpu", box_threshold: float | None = None):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, SamModel, SamProcessor

        def load_detector(folder):
            model = AutoModelForZeroShotObjectDetection.from_pretrained(folder, local_files_only=True).to(device).eval()
            if model.config.model_type not in DETECTOR_TYPES:
                raise UserError(f"detector model folder {folder}: model type {model.config.model_type!r} is not a "
                                f"supported grounding detector ({', '.join(DETECTOR_TYPES)})")
            return model, AutoProcessor.from_pretrained(folder, local_files_only=True)

        self.detector, self.detector_processor = _load("detector", detector_dir, load_detector)
        self.sam, self.sam_processor = _load("sam", sam_dir, lambda f: (
            SamModel.from_pretrained(f, local_files_only=True).to(device).eval(),
            SamProcessor.from_pretrained(f, local_files_only=True)))
        self.device = device
        self.detector_type = self.detector.config.model_type
        self.box_threshold = DEFAULT_BOX_THRESHOLDS[self.detector_type] if box_threshold is None else box_threshold

    def detect(self, image: np.ndarray, category: str) -> tuple[list[float], float] | None:
        """The highest-scoring ``[x0, y0, x1, y1]`` box for ``category`` and its score, or None."""
        import torch

        h, w = image.shape[:2]
        text = f"{category}." if self.detector_type == "grounding-dino" else [[f"a photo of {category}"]]
        inputs = self.detector_processor(images=Image.fromarray(image), text=text, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.no_grad():
            outputs = self.detector(**inputs)
        if self.detector_type == "grounding-dino":
            result = self.detector_processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=0.0,
                target_sizes=[(h, w)])[0]
        else:
            result = self.detector_processor.post_process_grounded_object_detection(
                outputs, threshold=self.box_threshold, target_sizes=[(h, w)])[0]
        if len(result["scores"]) == 0:
            return None
        best = int(torch.argmax(result["scores"]))
        box = [float(np.clip(v, 0, side - 1)) for v, side in zip(result["boxes"][best].tolist(), (w, h, w, h))]
        return box, float(result["scores"][best])

    def segment(self, image: np.ndarray, box: list[float]) -> np.ndarray:
        """SAM's single-mask prediction for a box prompt, as a boolean mask at the photo's size."""
        import torch

        inputs = self.sam_processor(images=Image.fromarray(image), input_boxes=[[box]], return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.no_grad():
            outputs = self.sam(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                               multimask_output=False)
        masks = self.sam_processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
        return masks[0][0, 0].numpy().astype(bool)

    def propose(self, image: np.ndarray, kind: str, target: float, rng: np.random.Generator) -> Region:
        """A detected region of ``kind``; ``target`` is recorded only (the detector decides the area)."""
        vocabulary = STUFF_CATEGORIES if kind == "stuff" else THING_CATEGORIES
        category = str(rng.choice(vocabulary))
        found = self.detect(image, category)
        if found is None:
            return Region(np.zeros(image.shape[:2], bool), kind, "grounded-sam", category, {"detected": False})
        box, score = found
        mask = finish_mask(self.segment(image, box))
        if kind == "background":
            mask = ~mask
        params = {"box": [round(v, 2) for v in box], "detector_score": round(score, 5),
                  "detector": self.detector_type, "target_area": round(target, 4)}
        return Region(mask, kind, "grounded-sam", category, params)


# --------------------------------------------------------------------------------------------- creation


def _method_tag(pipeline) -> str:
    name = type(pipeline).__name__
    known = {"StableDiffusionXLInpaintPipeline": "SDXLInpaint", "StableDiffusionInpaintPipeline": "SDInpaint",
             "KandinskyV22InpaintCombinedPipeline": "KandinskyInpaint", "FluxInpaintPipeline": "FluxInpaint"}
    return known.get(name, name.replace("Pipeline", "") or "diffusersInpaint")


class DiffusersInpainter(Creator):
    """A diffusers inpainting pipeline from a local folder (paper §3.2.2, prompt-based family)."""

    family = "diffusion-inpainting"
    backend = "models"
    needs_prompt = True

    def __init__(self, folder: str, device: str = "cpu", steps: int = 30, guidance_scale: float = 7.5):
        import torch
        from diffusers import AutoPipelineForInpainting

        def load(f):
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            pipe = AutoPipelineForInpainting.from_pretrained(f, dtype=dtype, local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(device)

        self.pipe = _load("inpaint", folder, load)
        self.tag = _method_tag(self.pipe)
        self.device, self.steps, self.guidance_scale = device, steps, guidance_scale
        self.multiple = 8 * max(1, int(getattr(self.pipe, "vae_scale_factor", 8)) // 8)

    def create(self, image, mask, rng, donor, prompt=None):
        import torch

        h, w = image.shape[:2]
        m = max(self.multiple, 8)
        th, tw = max(m, (h // m) * m), max(m, (w // m) * m)
        seed = int(rng.integers(0, 2 ** 31 - 1))
        src = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        msk = cv2.resize(mask.astype(np.uint8) * 255, (tw, th), interpolation=cv2.INTER_NEAREST)
        result = self.pipe(prompt=prompt or "", image=Image.fromarray(src), mask_image=Image.fromarray(msk), height=th,
                           width=tw, num_inference_steps=self.steps, guidance_scale=self.guidance_scale, strength=1.0,
                           generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        out = np.clip(np.asarray(result) * 255.0, 0, 255).round().astype(np.uint8)
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC)
        return composite(image, out, mask), {"pipeline": type(self.pipe).__name__, "steps": self.steps,
                                             "guidance_scale": self.guidance_scale, "generator_seed": seed,
                                             "work_size": [th, tw], "paste_back": True}


class TAESDResynthesis(Creator):
    """Latent re-synthesis through a real TAESD encoder/decoder round trip of the masked crop (stand-in (iii))."""

    tag = "taesdLDM"
    family = "latent-resynthesis"
    backend = "models"

    def __init__(self, folder: str, device: str = "cpu"):
        from diffusers import AutoencoderTiny

        self.vae = _load("taesd", folder, lambda f: AutoencoderTiny.from_pretrained(
            f, local_files_only=True).to(device).eval())
        self.device = device

    def create(self, image, mask, rng, donor, prompt=None):
        import torch

        h, w = image.shape[:2]
        content, params = resynthesis_source(image, rng, donor)
        pasted = composite(image, content, mask)
        ys, xs = np.nonzero(mask)
        y0, y1 = max(0, int(ys.min()) - 8), min(h, int(ys.max()) + 9)
        x0, x1 = max(0, int(xs.min()) - 8), min(w, int(xs.max()) + 9)
        crop = pasted[y0:y1, x0:x1]
        ph, pw = (-crop.shape[0]) % 8, (-crop.shape[1]) % 8
        padded = cv2.copyMakeBorder(crop, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].float().div(127.5).sub(1.0).to(self.device)
        with torch.no_grad():
            latents = self.vae.encode(x).latents
            decoded = self.vae.decode(latents).sample
        out_crop = decoded[0].permute(1, 2, 0).clamp(-1, 1).add(1).mul(127.5).round().byte().cpu().numpy()
        out = image.copy()
        out[y0:y1, x0:x1] = out_crop[:crop.shape[0], :crop.shape[1]]
        params.update(crop=[y0, y1, x0, x1], latent_shape=list(latents.shape[1:]))
        return composite(image, out, mask), params


# --------------------------------------------------------------------------------------------- alignment


class ClipAlignment:
    """CLIP image-text cosine similarity on the crop of the edited region (paper §3.2.3 (c))."""

    name = "clip"

    def __init__(self, folder: str, device: str = "cpu", min_score: float = 0.2):
        from transformers import CLIPModel, CLIPProcessor

        self.model, self.processor = _load("clip", folder, lambda f: (
            CLIPModel.from_pretrained(f, local_files_only=True).to(device).eval(),
            CLIPProcessor.from_pretrained(f, local_files_only=True)))
        self.device, self.min_score = device, min_score

    def score(self, image: np.ndarray, mask: np.ndarray, prompt: str | None) -> float:
        import torch

        ys, xs = np.nonzero(mask)
        crop = image[ys.min():ys.max() + 1, xs.min():xs.max() + 1] if ys.size else image
        inputs = self.processor(text=[prompt or ""], images=Image.fromarray(np.ascontiguousarray(crop)),
                                return_tensors="pt", padding=True).to(self.device)
        with torch.no_grad():
            out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return float((img * txt).sum())


# --------------------------------------------------------------------------------------------- assembly


def build_backends(backend: str, model_dirs: dict, device: str = "cpu", inpaint_steps: int = 30,
                   clip_min_score: float = 0.2) -> Backends:
    """The stage back ends for ``--backend`` and the ``--model-dir`` folders (see the module docstring)."""
    unknown = [k for k in model_dirs if k not in MODEL_KEYS]
    if unknown:
        raise UserError(f"model folders: unknown key {unknown[0]!r}; use {', '.join(k + '=DIR' for k in MODEL_KEYS)}",
                        option="model_dirs")
    creators: dict[str, Creator] = builtin_creators()
    if backend == "builtin":
        if model_dirs:
            raise UserError("model folders are only used by the models back end, not the builtin one",
                            option="backend")
        return Backends(BuiltinRegions(), creators, DEFAULT_METHODS, None,
                        {"regions": "builtin", "creation": "builtin", "alignment": "skipped (no CLIP weights)"})
    if backend != "models":
        raise UserError(f"back end must be builtin or models, got {backend!r}")
    if not model_dirs:
        raise UserError("models back end: no weights given, so the model back ends are unavailable; name local "
                        "model folders detector=DIR sam=DIR inpaint=DIR taesd=DIR clip=DIR (any subset)",
                        option="model_dirs")
    if ("detector" in model_dirs) != ("sam" in model_dirs):
        raise UserError("model folders: region masks need both detector=DIR and sam=DIR (or neither, for built-in "
                        "regions)", option="model_dirs")
    if "detector" in model_dirs:
        regions = GroundedSAMRegions(model_dirs["detector"], model_dirs["sam"], device)
        regions_info = f"grounded-sam ({regions.detector_type} + SAM)"
    else:
        regions, regions_info = BuiltinRegions(), "builtin (no detector/SAM weights given)"
    model_creators: list[Creator] = []
    described = []
    if "inpaint" in model_dirs:
        inpainter = DiffusersInpainter(model_dirs["inpaint"], device, steps=inpaint_steps)
        model_creators.append(inpainter)
        described.append(f"diffusers {type(inpainter.pipe).__name__} ({inpainter.tag})")
    if "taesd" in model_dirs:
        model_creators.append(TAESDResynthesis(model_dirs["taesd"], device))
        described.append("TAESD latent round trip (taesdLDM)")
    creators.update({c.tag: c for c in model_creators})
    defaults = tuple(c.tag for c in model_creators) or DEFAULT_METHODS
    creation_info = ", ".join(described) or "builtin (no inpainting model given)"
    aligner = ClipAlignment(model_dirs["clip"], device, clip_min_score) if "clip" in model_dirs else None
    alignment_info = "clip" if aligner else "skipped (no CLIP weights)"
    return Backends(regions, creators, defaults, aligner,
                    {"regions": regions_info, "creation": creation_info, "alignment": alignment_info})
