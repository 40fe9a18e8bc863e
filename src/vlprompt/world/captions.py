"""Captions of scenes: varied templates naming a random subset of the attributes.

The shape is almost always named and the colour usually, so the text encoder learns both words and
their composition; count, size, fill and background appear often enough to be learned too. The
downstream tasks' templates ("a photo of a red circle.", "a photo of a red shape.", ...) are among
the phrasings captions use.
"""

from __future__ import annotations

import random

from vlprompt.world.generator import COUNT_WORDS, Scene

PLURALS = {"cross": "crosses"}
TEXTURE_WORDS = {"plain": "plain", "stripes": "striped", "dots": "dotted", "checker": "checkered",
                 "grid": "grid", "noise": "noisy"}


def plural(noun: str) -> str:
    return PLURALS.get(noun, noun + "s")


def noun_phrase(scene: Scene, rng: random.Random, p_colour=0.85, p_shape=0.9) -> str:
    words = []
    with_count = scene.count > 1 and rng.random() < 0.8 or rng.random() < 0.15
    words.append(COUNT_WORDS[scene.count - 1] if with_count else "a")
    if rng.random() < 0.35:
        words.append(scene.size)
    if rng.random() < 0.35:
        words.append(rng.choice(("solid", "filled")) if scene.filled else rng.choice(("outlined", "hollow")))
    if rng.random() < p_colour:
        words.append(scene.colour)
    noun = scene.shape if rng.random() < p_shape else rng.choice(("shape", "object"))
    words.append(plural(noun) if scene.count > 1 and words[0] != "a" else noun)
    return " ".join(words)


def caption(scene: Scene, rng: random.Random) -> str:
    phrase = noun_phrase(scene, rng)
    if rng.random() < 0.45:
        phrase += f" on a {TEXTURE_WORDS[scene.texture]} background"
    style = rng.random()
    if style < 0.5:
        return f"a photo of {phrase}."
    if style < 0.7:
        return f"{phrase}."
    if style < 0.85:
        return f"an image showing {phrase}."
    return f"a picture of {phrase}."
