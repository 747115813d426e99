"""Sizes, durations and checksums as people and Slurm write them: one reading of each, everywhere.

Standard library only: code inside Slurm jobs (``operators.jobs``) uses it as well as the orchestrator.
Binary units throughout (``1K`` = 1024 bytes), as Slurm, DVC and ``--mem`` read them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path

MiB = 1 << 20
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*", re.IGNORECASE | re.ASCII)
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def size_bytes(text: str | int, whole: bool = False) -> int:
    """``8M``, ``256MiB``, ``1.5G``, ``4096`` → bytes (``whole``: no fractions). ``ValueError`` names the text."""
    match = SIZE.fullmatch(str(text))
    if not match or (whole and "." in match[1]):
        raise ValueError(f"not a size: {text!r} (e.g. 8M, 256M, 1G or a byte count)")
    return int(float(match[1]) * SIZE_UNITS[match[2].upper()])


def size_bytes_or_none(text: str | None) -> int | None:
    """Accounting fields (``MaxRSS``): a size, or None when Slurm left the field empty or odd."""
    try:
        return size_bytes(text) if text and text.strip() else None
    except ValueError:
        return None


def memory_mb(memory: str) -> int:
    """``--mem``'s value as whole megabytes (a bare number is megabytes, as Slurm reads it), at least 1."""
    plain = memory.strip()
    return max(1, size_bytes(plain + "M" if plain.isdigit() else plain) // MiB)


def slurm_time_seconds(text: str) -> int:
    """Slurm's time limits: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``; ASCII digits only,
    more than zero (Slurm reads 0 as no limit) and at most a year."""
    match = re.fullmatch(r"(?:([0-9]{1,4})-)?([0-9]{1,7})(?::([0-9]{1,2}))?(?::([0-9]{1,2}))?", text)
    if not match:
        raise ValueError(f"{text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, first, second, third = match.groups()
    if days is None and third is None:  # M or M:S
        hours, minutes, seconds = 0, int(first), int(second or 0)
        too_big = seconds > 59
    else:  # H:M:S, D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        too_big = minutes > 59 or seconds > 59
    if too_big:
        raise ValueError(f"{text!r}: minutes and seconds must be below 60")
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise ValueError(f"{text!r}: a time limit of zero means no limit to Slurm; give the job's real limit")
    if total > 365 * 86400:
        raise ValueError(f"{text!r} is more than 365 days")
    return total


def slurm_time_minutes(text: str) -> int:
    """``--time`` as whole minutes, for APIs that take numbers (slurmrestd, pyslurm); Slurm rounds seconds up."""
    return -(-slurm_time_seconds(text) // 60)


def elapsed_seconds(text: str) -> float | None:
    """Accounting durations (``TotalCPU``, ``RunTime``): ``[D-]HH:MM:SS[.mmm]``, ``MM:SS.mmm``; None for empty
    or the words Slurm writes instead of a duration."""
    text = text.strip()
    if not text or text in ("INVALID", "UNLIMITED", "Partition_Limit"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [float(part) for part in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 3600 + minutes * 60 + seconds


def duration(text: str) -> timedelta:
    """``36h``, ``30d``, ``2w`` (reviewed files: a number and one of s, m, h, d, w)."""
    match = re.fullmatch(r"([0-9]{1,7})([smhdw])", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (a number and s, m, h, d or w, e.g. 36h)")
    return timedelta(seconds=int(match[1]) * DURATION_UNITS[match[2]])


def md5_of(path: Path) -> str:
    """md5 of a file on disk, read in 8 MiB pieces (DVC names data by it)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()
