"""Small shared pieces of the training commands: the error type, atomic writes, a progress line."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..errors import Llama2cError


class TrainError(Llama2cError):
    """Bad input to a training command: the CLI prints its message as one line."""


def check_writable(target: Path, force: bool, folder_may_be_made: bool = False) -> None:
    """Refuses to replace an existing file unless forced (the user's files stay intact)."""
    if target.exists() and not force:
        raise TrainError(f"{target} exists (pass --force to replace it)")
    if not folder_may_be_made and not target.parent.is_dir():
        raise TrainError(f"no folder {target.parent} for {target.name}")


def fsync_replace(tmp: Path, target: Path) -> None:
    """Flushes `tmp` to disk and renames it over `target`: a crash leaves the old file or the new
    one, never half of one (rename within a folder is atomic on POSIX)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def atomic_write(target: Path, write) -> None:
    """Calls write(tmp_path) then moves the result over target; on any failure removes tmp."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        fsync_replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Progress:
    """A one-line progress bar on stderr: done/total, a message, rate and time left."""

    def __init__(self, total: int, label: str, unit: str = "", enabled: bool = True):
        self.total, self.label, self.unit, self.enabled = total, label, unit, enabled
        self.started = time.monotonic()
        self.shown = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, done: int, message: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.shown < (0.2 if self.tty else 10.0)):
            return
        self.shown = now
        fraction = min(done / self.total, 1.0) if self.total else 1.0
        elapsed = now - self.started
        left = elapsed / fraction - elapsed if fraction > 0 else 0.0
        bar = "#" * int(fraction * 24)
        line = (f"{self.label} [{bar:<24}] {done}/{self.total}{self.unit} {message} "
                f"{format_seconds(elapsed)} elapsed, {format_seconds(left)} left")
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
