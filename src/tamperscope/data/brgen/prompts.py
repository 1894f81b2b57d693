"""Captions for prompt-based creation and alignment (paper 001 §3.2.1;
templates: resolved choice).

BR-Gen asks Qwen2.5-VL for a caption of the image and of the edited target, then applies Probabilistic Semantic
Perturbation (p = 0.5): the Stuff target is swapped for a compatible alternative ("blue sky" -> "starry sky");
for Background the text outside the target is rewritten. Without a VLM we use templates over a small fixed
vocabulary and swap the category (Stuff) or the scene (Background) from a hand-written table of compatible
alternatives with the same probability.
"""
from __future__ import annotations

import numpy as np

STUFF_CATEGORIES = ("sky", "grass", "ground", "wall", "water", "sand", "snow", "road", "tree", "mountain")
THING_CATEGORIES = ("person", "car", "dog", "cat", "bird", "boat", "chair", "bicycle", "bottle", "horse")
SCENES = ("street", "beach", "forest", "room", "field", "harbour", "garden", "mountain landscape")
PERTURBATION_PROBABILITY = 0.5
ALTERNATIVES = {
    "sky": ("starry sky", "cloudy sky", "sunset sky", "overcast sky"),
    "grass": ("snow-covered grass", "dry grass", "flower meadow"),
    "ground": ("muddy ground", "rocky ground", "gravel"),
    "wall": ("brick wall", "painted wall", "stone wall"),
    "water": ("calm lake", "stormy sea", "frozen water"),
    "sand": ("wet sand", "pebbles", "dune"),
    "snow": ("fresh snow", "melting snow", "ice"),
    "road": ("cobblestone road", "dirt road", "wet asphalt"),
    "tree": ("autumn trees", "palm trees", "bare trees"),
    "mountain": ("snowy mountain", "rocky hills", "green hills"),
    "street": ("night street", "rainy street", "busy market"),
    "beach": ("rocky shore", "tropical beach", "winter beach"),
    "forest": ("autumn forest", "pine forest", "misty forest"),
    "room": ("kitchen", "library", "living room"),
    "field": ("wheat field", "snowy field", "lavender field"),
    "harbour": ("marina at dusk", "fishing port", "canal"),
    "garden": ("rose garden", "vegetable garden", "zen garden"),
    "mountain landscape": ("desert landscape", "alpine valley", "canyon"),
}


def make_prompt(kind: str, category: str | None, rng: np.random.Generator) -> tuple[str, dict]:
    """A caption for the region to (re)generate and a record of how it was made."""
    if kind == "background":
        scene = str(rng.choice(SCENES))
        perturbed = bool(rng.random() < PERTURBATION_PROBABILITY)
        if perturbed:
            scene = str(rng.choice(ALTERNATIVES[scene]))
        subject = category or "the main subject"
        return f"a photo of {subject} in a {scene}", {"scene": scene, "perturbed": perturbed}
    vocabulary = STUFF_CATEGORIES if kind == "stuff" else THING_CATEGORIES
    target = category or str(rng.choice(vocabulary))
    perturbed = bool(rng.random() < PERTURBATION_PROBABILITY) and target in ALTERNATIVES
    if perturbed:
        target = str(rng.choice(ALTERNATIVES[target]))
    return f"a photo of {target}", {"category": category, "target": target, "perturbed": perturbed}
