"""Attribute vocabularies.

The default vocabulary is the 33 SUN attributes used by the SIAM paper (Marcos, Lobry & Tuia,
ICCVW 2019, Sec. 4.1), in the column order of the authors' label files
(``attributeLabels_continuous2.mat``). Any other list of names can be used instead; the names
travel inside every checkpoint so that K and the map order are never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

SUN33: tuple[str, ...] = (
    "trees", "grass", "flowers", "ocean", "running_water", "still_water", "road", "railroad",
    "fencing_railing", "wire", "transport", "wood", "ice_snow", "brick", "shingles", "metal",
    "cloth", "sand", "rock_stone", "glass", "aged_worn", "dirty", "rusty", "dry",
    "rugged_scene", "cluttered_space", "clouds", "horizon", "digging", "temple", "farming",
    "hiking", "social",
)


def normalize_name(name: str) -> str:
    """Canonical form used to match attribute names across files.

    Lower-case; spaces, hyphens and slashes become underscores; repeated underscores collapse.
    So ``"Ice/snow"``, ``"ice snow"`` and ``"ice_snow"`` all match ``ice_snow``.
    """
    out = name.strip().lower()
    for ch in (" ", "-", "/", "\\"):
        out = out.replace(ch, "_")
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")


def validate_attributes(attributes: Sequence[str] | None) -> tuple[str, ...]:
    """Return the attribute names as a tuple; ``None`` gives the paper's 33 (:data:`SUN33`).

    Raises ``ValueError`` for an empty list, a non-string, or duplicate names.
    """
    if attributes is None:
        return SUN33
    if isinstance(attributes, str):
        raise ValueError(
            f"attributes must be a list of names, got the single string {attributes!r}"
        )
    names = tuple(attributes)
    if not names:
        raise ValueError("attributes must hold at least one name, got an empty list")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"attribute names must be non-empty strings, got {bad!r}")
    seen: set[str] = set()
    dups = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"attribute names must be unique, got duplicates {sorted(set(dups))!r}")
    return names
