"""run.c's generation settings: parsed from text with C's atof/atoi rules and clamped as main() does.

The command line and the page both go through `Settings.parse`, so the same flags or URL parameters
give the same story.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

_C_SPACE = " \t\n\v\f\r"
_FLOAT = re.compile(r"[+-]?(?:inf(?:inity)?|nan|0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?\d+)?"
                    r"|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)", re.IGNORECASE)
_INT = re.compile(r"[+-]?\d+")


def c_atof(text: str) -> float:
    """C's atof: the longest numeric prefix after whitespace, 0.0 if there is none."""
    match = _FLOAT.match(text.lstrip(_C_SPACE))
    if not match:
        return 0.0
    number = match.group(0)
    if "x" in number.lower():
        sign = -1.0 if number.startswith("-") else 1.0
        body = number.lstrip("+-")
        return sign * float.fromhex(body if "p" in body.lower() else body + "p0")
    return float(number)


def c_atoi(text: str) -> int:
    """glibc's atoi: (int) strtol(text, NULL, 10), which saturates at 64 bits, then wraps to 32."""
    match = _INT.match(text.lstrip(_C_SPACE))
    if not match:
        return 0
    value = max(-(1 << 63), min((1 << 63) - 1, int(match.group(0))))
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass
class Settings:
    """What run.c's main() hands to generate() or chat(), after its defaults and clamping."""

    temperature: float = 1.0
    topp: float = 0.9
    seed: int = 0  # 0 means "from the clock", as run.c's time(NULL)
    steps: int = 256  # 0 means seq_len
    prompt: str | None = None
    mode: str = "generate"
    system_prompt: str | None = None

    @classmethod
    def parse(cls, temperature: str | None = None, topp: str | None = None,
              seed: str | None = None, steps: str | None = None, prompt: str | None = None,
              mode: str | None = None, system_prompt: str | None = None) -> "Settings":
        """From flag values as text (None = not given), with atof/atoi, then `clamped()`."""
        s = cls(prompt=prompt, system_prompt=system_prompt,
                mode="generate" if mode is None else mode)
        if temperature is not None:
            s.temperature = c_atof(temperature)
        if topp is not None:
            s.topp = c_atof(topp)
        if seed is not None:
            s.seed = c_atoi(seed) & ((1 << 64) - 1)  # int to unsigned long long
        if steps is not None:
            s.steps = c_atoi(steps)
        return s.clamped()

    def clamped(self) -> "Settings":
        """run.c's overrides: seed 0 -> clock, negative temperature -> 0, top-p outside [0, 1] -> 0.9."""
        if self.mode not in ("generate", "chat"):
            raise ValueError(f"unknown mode: {self.mode} (use generate or chat)")
        if self.seed == 0:
            self.seed = int(time.time()) & 0xFFFFFFFF
        if self.temperature < 0.0:
            self.temperature = 0.0
        if self.topp < 0.0 or self.topp > 1.0 or math.isnan(self.topp):
            self.topp = 0.9
        if self.steps < 0:
            self.steps = 0
        return self
