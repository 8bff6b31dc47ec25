"""A synthetic story grammar with a known entropy, for the training tests.

Every story is one template with seven slots, each filled uniformly at random:

    Once upon a time, there was a {adj} {animal} named {name}. {name} liked to {verb} {place}.
    One day, {name} found a {thing}. {name} was very {feeling}. The end.

The name is chosen once and repeated, so a model that reads its context can predict the repeats.
The entropy of a story is the sum of log(choices) over the seven slots, ENTROPY_PER_STORY nats.
"""

from __future__ import annotations

import math
import random
import re

SLOTS = {
    "adj": ["big", "little", "happy", "sleepy"],
    "animal": ["cat", "dog", "bird", "fox"],
    "name": ["Tim", "Lily", "Ben", "Sue", "Max", "Mia", "Sam", "Zoe"],
    "verb": ["play", "run", "sing", "jump"],
    "place": ["in the park", "by the lake", "at home", "under a tree"],  # no two share a first word
    "thing": ["red ball", "shiny stone", "small box", "blue kite"],
    "feeling": ["happy", "proud", "surprised", "glad"],
}
TEMPLATE = ("Once upon a time, there was a {adj} {animal} named {name}. {name} liked to {verb} "
            "{place}. One day, {name} found a {thing}. {name} was very {feeling}. The end.")

ENTROPY_PER_STORY = sum(math.log(len(v)) for v in SLOTS.values())  # nats: 6 ln 4 + ln 8 = 10.40
# what a model pays that knows the template but does not repeat the name (3 more choices of 8)
ENTROPY_WITHOUT_COPYING = ENTROPY_PER_STORY + 3 * math.log(len(SLOTS["name"]))


def story(rng: random.Random) -> str:
    return TEMPLATE.format(**{slot: rng.choice(options) for slot, options in SLOTS.items()})


def stories(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]


def _alternatives(slot: str) -> str:
    return "(?:" + "|".join(map(re.escape, SLOTS[slot])) + ")"


def story_pattern(repeat_name: bool) -> re.Pattern:
    """One story; with repeat_name, every later name must equal the first."""
    pattern = re.escape(TEMPLATE)
    name = "(?P<name>" + _alternatives("name") + ")"
    pattern = pattern.replace(re.escape("{name}"), name, 1)
    pattern = pattern.replace(re.escape("{name}"), "(?P=name)" if repeat_name else _alternatives("name"))
    for slot in SLOTS:
        pattern = pattern.replace(re.escape("{" + slot + "}"), _alternatives(slot))
    return re.compile(pattern)


STORY_RE = story_pattern(repeat_name=True)
STORY_SHAPE_RE = story_pattern(repeat_name=False)
