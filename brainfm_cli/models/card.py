"""Model cards: what a registered model is, as data (``models/*.yaml``, data contracts §6).

A card names the family and its hyperparameters (``architecture``), the input space the model expects
(``input``: atlas, regions, TR, length, patch, normalisation), where its weights come from, and what is known
about its training and evaluation. ``embed --model NAME`` needs nothing else.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from brainfm_cli.errors import BrainfmError

NORMALISATIONS = ("zscore_region", "zscore_global", "robust_region", "none")
RESAMPLINGS = ("polyphase", "average")


@dataclass(frozen=True)
class InputSpace:
    """The model-ready input: ``n_regions`` × ``seq_len`` samples at ``tr`` seconds, normalised as stated.

    ``atlas`` names a brainfm atlas when the space is available offline (region names are then checked), else
    it describes the space the user must supply. ``bandpass`` is ``[low, high]`` Hz applied after resampling.
    ``short_runs``: ``pad`` (the model masks padded patches) or ``refuse``. ``resampling``: ``polyphase``
    (anti-aliased, to ``tr``) or ``average`` (means of consecutive frames over windows of ``tr`` seconds, one
    sample per window, as MinD-Vis does). ``voxels``: the identity of a voxel input (count, ordered and
    unordered hashes of the voxel names, where it came from), for models whose regions are voxels.
    """

    n_regions: int
    seq_len: int
    tr: float
    atlas: str | None = None
    atlas_description: str = ""
    patch: int | None = None
    normalisation: str = "zscore_region"
    bandpass: tuple[float, float] | None = None
    short_runs: str = "refuse"
    resampling: str = "polyphase"
    voxels: dict | None = None
    regions: tuple[str, ...] | None = None  # the ordered region names (a subset of the atlas's, in its order)
    coordinates: tuple[tuple[float, float, float], ...] | None = None  # MNI mm per region, when not the atlas's
    atlas_labels: str | None = None  # the labels TSV of a user atlas image (``atlas`` is then its file)

    def __post_init__(self):
        if self.regions is not None:
            object.__setattr__(self, "regions", tuple(str(r) for r in self.regions))
            if len(self.regions) != self.n_regions:
                raise ValueError(f"{len(self.regions)} region names for n_regions {self.n_regions}")
        if self.coordinates is not None:
            object.__setattr__(self, "coordinates", tuple(tuple(float(v) for v in c) for c in self.coordinates))
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.normalisation!r}; one of {NORMALISATIONS}")
        if self.short_runs not in ("pad", "refuse"):
            raise ValueError(f"short_runs must be 'pad' or 'refuse', not {self.short_runs!r}")
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"unknown resampling {self.resampling!r}; one of {RESAMPLINGS}")
        if self.bandpass is not None:
            object.__setattr__(self, "bandpass", tuple(float(b) for b in self.bandpass))


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    description: str
    architecture: dict[str, Any]
    input: InputSpace
    version: str = "1"
    embedding: dict[str, Any] = field(default_factory=dict)  # width, poolings, default pooling
    weights: dict[str, Any] = field(default_factory=dict)  # file (beside the card) / source (hf://…) / sha256
    paper: str = ""
    licence: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)  # named presets: architecture overrides
    forecast: dict[str, Any] = field(default_factory=dict)  # a forecaster's context, horizon and method
    path: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("path")
        for key in ("bandpass", "regions"):
            if out["input"][key] is not None:
                out["input"][key] = list(out["input"][key])
        if out["input"]["coordinates"] is not None:
            out["input"]["coordinates"] = [list(c) for c in out["input"]["coordinates"]]
        for key in ("regions", "coordinates", "atlas_labels"):  # keep cards without them as they were
            if out["input"][key] is None:
                del out["input"][key]
        if not out["forecast"]:
            del out["forecast"]
        return out

    def with_architecture(self, **overrides) -> "ModelCard":
        """The card with architecture keys replaced; ``size=NAME`` of one of ``sizes`` applies that preset first
        (keys given beside it win)."""
        arch = copy.deepcopy(self.architecture)
        if overrides.get("size") in self.sizes:
            arch.update(copy.deepcopy(self.sizes[overrides["size"]]))
        arch.update(overrides)
        return replace(self, architecture=arch)

    def with_size(self, name: str) -> "ModelCard":
        """The card at one of its named sizes (``tiny``, ``small``, …, the published one)."""
        if name not in self.sizes:
            raise BrainfmError(f"{self.name} has no size '{name}'",
                               fix=f"use one of {', '.join(self.sizes) or '(none: this card has one size)'}")
        return self.with_architecture(size=name)

    def with_input(self, **overrides) -> "ModelCard":
        return replace(self, input=replace(self.input, **overrides))

    @property
    def weights_file(self) -> Path | None:
        """The shipped checkpoint beside the card, if the card names one and it is present."""
        name = self.weights.get("file")
        if not name or self.path is None:
            return None
        p = Path(self.path).parent / name
        return p if p.is_file() else None


def card_from_dict(data: dict, path: str | None = None) -> ModelCard:
    """Build a card from its YAML/JSON form; a malformed card is an error naming the file."""
    try:
        data = dict(data)
        space = InputSpace(**data.pop("input"))
        return ModelCard(input=space, path=path, **data)
    except (TypeError, ValueError, KeyError) as exc:
        raise BrainfmError(f"malformed model card ({exc})", path=path,
                           fix="compare it with a card from 'brainfm models show NAME'") from None


def _read_card(path: Path) -> ModelCard:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BrainfmError(f"model card is not valid YAML ({exc})", path=path, fix="repair the file") from None
    if not isinstance(data, dict):
        raise BrainfmError("model card is not a mapping", path=path, fix="repair the file")
    return card_from_dict(data, str(path))


@lru_cache(maxsize=1)
def registered_cards() -> dict[str, ModelCard]:
    """Every card shipped with brainfm, by name."""
    from brainfm_cli._resources import model_cards_dir

    cards = {}
    for path in sorted(model_cards_dir().glob("*.yaml")):
        card = _read_card(path)
        cards[card.name] = card
    return cards


def get_card(name: str | Path) -> ModelCard:
    """A registered card by name, or a card YAML file; an unknown name suggests the closest."""
    text = str(name)
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise BrainfmError("model card not found", path=path, fix="check the path")
        return _read_card(path)
    cards = registered_cards()
    if text in cards:
        return cards[text]
    close = difflib.get_close_matches(text.lower(), list(cards), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise BrainfmError(f"unknown model '{text}'", fix=f"{hint}'brainfm models' lists them all")


def require_keys(arch: dict, keys, family: str) -> None:
    """A family's architecture must name every key it builds from (cards carry their sizes as data)."""
    missing = [k for k in keys if k not in arch]
    if missing:
        raise BrainfmError(f"{family} architecture lacks {missing}",
                           fix="give the keys in the card or with --arch key=value, or pick a size with --size")


WIDTH_HEADS = (("embed_dim", "num_heads"), ("decoder_dim", "decoder_heads"), ("predictor_dim", "predictor_heads"))


def check_architecture(card: ModelCard) -> None:
    """Values that must agree with each other, checked before anything is built (widths divisible by heads,
    positive sizes), so a bad ``--arch`` is a message, not a traceback from a layer."""
    a = card.architecture
    for key in ("embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth", "decoder_heads", "predictor_dim",
                "predictor_depth", "predictor_heads"):
        if key in a and not (isinstance(a[key], int) and not isinstance(a[key], bool) and a[key] > 0):
            raise BrainfmError(f"{card.name}: {key} must be a positive integer, not {a[key]!r}",
                               fix=f"e.g. --arch {key}={4 if 'heads' in key else 64}")
    for width, heads in WIDTH_HEADS:
        if width in a and heads in a and a[width] % a[heads]:
            divisors = [h for h in range(1, min(a[width], 64) + 1) if a[width] % h == 0]
            raise BrainfmError(f"{card.name}: {width}={a[width]} is not divisible by {heads}={a[heads]}",
                               fix=f"choose {heads} among {', '.join(map(str, divisors[-6:]))}, or another {width}")
