"""The built-in benchmark: MOSI-like synthetic data whose per-sample modality reliability is known.

Generative model (per split, N samples; modality order l, v, a everywhere):

1. Latent sentiment s: a two-sided mixture 0.55 N(+1, 1) + 0.45 N(-1, 1) clipped to [-3, 3]. The
   label y is s plus annotator noise (``label_noise``), rounded to the 1/3 grid of averaged annotator
   scores and clipped to [-3, 3]; a further ``zero_share`` of samples is set to exactly 0. The
   annotator noise is the floor of any model's error (MAE about 0.8 * label_noise).
2. Reliability r ~ Dirichlet(``concentration``), shape (N, 3), stored as ``Split.reliability``. The
   share of the label a modality carries is c_m = r_m / max_k r_k: the most reliable modality carries
   all of it, the others a part.
3. Content: modality m expresses c_m s + (1 - c_m) z_m, where z_m is an independent draw of the
   latent sentiment (a plausible but wrong sentiment). No model can undo that mixing from modality m
   alone, so equal fusion weights are clearly worse than per-sample weights that follow r.
4. Inputs x_m (N, L_m, d_m): that content times ``signal`` along a fixed random direction, under a
   temporal envelope (a bump at a random time, as sentiment is expressed in a window), plus a
   per-sample nuisance ("speaker style", constant over time), a fixed per-channel offset, white
   noise of standard deviation ``noise + corruption * (1 - c_m)`` and a fixed artefact pattern of
   amplitude ``artefact * (1 - c_m)`` (think of an occluded face or a clipped microphone). Both make an
   unreliable modality visible in the raw inputs (the noise to a quadratic statistic such as temporal
   roughness, the artefact to a linear map such as EMOE's router), so a router can learn r.
   Amplitudes are per input value, so the signal-to-noise ratio does not depend on d_m.
5. Unaligned data: lengths may differ per modality; with ``ragged`` each audio/vision sequence has
   a random valid length in [L/2, L] followed by zero padding, stored as ``audio_lengths``/
   ``vision_lengths``.

Everything is vectorised numpy, deterministic for a seed (bit-identical), with one random stream for
the fixed directions and one per split, so changing a split's size leaves the other splits unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from emoe.data.arrays import DataSet, Split
from emoe.data.checks import DataError

__all__ = ["PRESETS", "SyntheticSpec", "make_synthetic", "synthetic_spec"]

_LABEL_SCALE = 1.5  # typical |y|; content is divided by it so ``signal`` is a per-value amplitude
_NUISANCE_RANK = 4


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes, shapes and difficulty of a synthetic data set; the defaults are the ``small`` preset."""

    n_train: int = 1200
    n_valid: int = 300
    n_test: int = 300
    len_text: int = 8
    len_audio: int = 8
    len_vision: int = 8
    d_text: int = 32
    d_audio: int = 5
    d_vision: int = 20
    signal: float = 1.0  # amplitude of the label content per input value
    noise: float = 0.3  # white noise on every input value
    corruption: float = 1.5  # extra noise scaled by a modality's unreliability 1 - c_m
    artefact: float = 2.0  # a fixed artefact pattern scaled by 1 - c_m (a linear cue of unreliability)
    nuisance: float = 0.5  # per-sample, label-free "speaker style" component
    concentration: tuple[float, float, float] = (0.5, 0.5, 0.5)  # Dirichlet of r (l, v, a)
    label_noise: float = 0.3  # annotator noise between the expressed sentiment and the label
    zero_share: float = 0.02  # extra share of labels set to exactly 0
    ragged: bool = False  # per-sample audio/vision lengths with zero padding
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.concentration, list):  # e.g. from YAML/JSON: keep the spec hashable
            object.__setattr__(self, "concentration", tuple(self.concentration))
        errors = self.validate()
        if errors:
            raise DataError("invalid synthetic spec:\n  " + "\n  ".join(errors))

    def validate(self) -> list[str]:
        """Every problem as ``"field: message"``."""
        e: list[str] = []
        for name in ("n_train", "n_valid", "n_test", "len_text", "len_audio", "len_vision",
                     "d_text", "d_audio", "d_vision"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
                e.append(f"{name}: must be a positive integer, got {v!r}")
        for name in ("noise", "corruption", "artefact", "nuisance", "label_noise"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and np.isfinite(v) and v >= 0):
                e.append(f"{name}: must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.signal, int | float) and np.isfinite(self.signal) and self.signal > 0):
            e.append(f"signal: must be a finite number > 0, got {self.signal!r}")
        conc = tuple(self.concentration) if isinstance(self.concentration, tuple | list) else ()
        if len(conc) != 3 or not all(isinstance(c, int | float) and c > 0 for c in conc):
            e.append(f"concentration: must be three positive numbers (l, v, a), got {self.concentration!r}")
        if not (isinstance(self.zero_share, int | float) and 0 <= self.zero_share < 1):
            e.append(f"zero_share: must be in [0, 1), got {self.zero_share!r}")
        if not isinstance(self.seed, int | np.integer) or isinstance(self.seed, bool) or self.seed < 0:
            e.append(f"seed: must be a non-negative integer, got {self.seed!r}")
        return e

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists), e.g. for hashing a trial's data description."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """Short, exact description: ``synthetic:<preset>(seed=..)`` or the fields unlike the defaults."""
        for name, preset in PRESETS.items():
            if dataclasses.replace(self, seed=preset.seed) == preset:
                return f"synthetic:{name}(seed={self.seed})"
        default = SyntheticSpec()
        diff = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)]
        return f"synthetic({','.join(diff)})"


PRESETS: dict[str, SyntheticSpec] = {
    "small": SyntheticSpec(),
    "tiny": SyntheticSpec(n_train=64, n_valid=32, n_test=32, len_text=8, len_audio=8, len_vision=8,
                          d_text=16, d_audio=5, d_vision=8),
    "mosi": SyntheticSpec(n_train=1284, n_valid=229, n_test=686, len_text=50, len_audio=50, len_vision=50,
                          d_text=768, d_audio=5, d_vision=20),
    "mosi_unaligned": SyntheticSpec(n_train=1284, n_valid=229, n_test=686, len_text=50, len_audio=375,
                                    len_vision=500, d_text=768, d_audio=5, d_vision=20, ragged=True),
    "mosei": SyntheticSpec(n_train=16326, n_valid=1871, n_test=4659, len_text=50, len_audio=50,
                           len_vision=50, d_text=768, d_audio=74, d_vision=35),
}


def synthetic_spec(preset: str = "small", **overrides: Any) -> SyntheticSpec:
    """A preset with some fields replaced; unknown presets or fields raise ``DataError`` naming them."""
    if preset not in PRESETS:
        raise DataError(f"synthetic preset: unknown {preset!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(SyntheticSpec)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise DataError(f"synthetic spec: unknown field(s) {', '.join(unknown)}; known: {sorted(known)}")
    if "concentration" in overrides:
        overrides["concentration"] = tuple(overrides["concentration"])
    return dataclasses.replace(PRESETS[preset], **overrides)


def _sentiment(rng: np.random.Generator, n: int) -> np.ndarray:
    """Latent sentiment: 0.55 N(+1, 1) + 0.45 N(-1, 1), clipped to [-3, 3]."""
    positive = rng.random(n) < 0.55
    return np.clip(rng.normal(np.where(positive, 1.0, -1.0), 1.0), -3.0, 3.0)


def _envelope(rng: np.random.Generator, n: int, length: int, valid: np.ndarray) -> np.ndarray:
    """(n, length) bump at a random step inside each sample's valid length, floor 0.4, peak 1."""
    centre = rng.random(n) * valid
    width = np.maximum(valid / 4.0, 1.0)
    t = np.arange(length)[None, :]
    return (0.4 + 0.6 * np.exp(-(((t - centre[:, None]) / width[:, None]) ** 2))).astype(np.float32)


def _modality(rng: np.random.Generator, fixed: dict[str, np.ndarray], spec: SyntheticSpec,
              content: np.ndarray, share: np.ndarray, length: int, valid: np.ndarray) -> np.ndarray:
    """Inputs (N, length, d) of one modality; ``fixed`` holds its direction, nuisance basis and offset."""
    n, d = len(content), fixed["direction"].shape[0]
    scale = (spec.noise + spec.corruption * (1.0 - share)).astype(np.float32)
    x = rng.standard_normal((n, length, d), dtype=np.float32)
    x *= scale[:, None, None]
    envelope = _envelope(rng, n, length, valid)
    amp = (spec.signal / _LABEL_SCALE) * content.astype(np.float32)[:, None] * envelope
    x += amp[:, :, None] * fixed["direction"][None, None, :]
    style = rng.standard_normal((n, _NUISANCE_RANK), dtype=np.float32) @ fixed["basis"]
    x += (spec.nuisance * style + fixed["offset"])[:, None, :]
    x += (spec.artefact * (1.0 - share)).astype(np.float32)[:, None, None] * fixed["artefact"][None, None, :]
    if (valid < length).any():
        x *= (np.arange(length)[None, :] < valid[:, None])[:, :, None]
    return x


def _fixed(rng: np.random.Generator, d: int) -> dict[str, np.ndarray]:
    direction, artefact = rng.standard_normal(d), rng.standard_normal(d)
    basis = rng.standard_normal((_NUISANCE_RANK, d))
    return {
        # unit directions times sqrt(d): each value carries the content (or artefact) at amplitude ~1
        "direction": (direction / np.linalg.norm(direction) * np.sqrt(d)).astype(np.float32),
        "artefact": (artefact / np.linalg.norm(artefact) * np.sqrt(d)).astype(np.float32),
        "basis": (basis / np.sqrt(_NUISANCE_RANK)).astype(np.float32),
        "offset": (0.5 * rng.standard_normal(d)).astype(np.float32),
    }


def _split(rng: np.random.Generator, fixed: dict[str, dict[str, np.ndarray]], spec: SyntheticSpec,
           n: int, prefix: str) -> Split:
    latent = _sentiment(rng, n)
    # the annotated label: the latent sentiment plus annotator noise, on the 1/3 grid of averaged scores
    y = np.clip(np.round((latent + spec.label_noise * rng.standard_normal(n)) * 3.0) / 3.0, -3.0, 3.0)
    y[rng.random(n) < spec.zero_share] = 0.0
    r = rng.dirichlet(np.asarray(spec.concentration, dtype=np.float64), size=n)
    share = r / r.max(axis=1, keepdims=True)
    distractor = _sentiment(rng, 3 * n).reshape(n, 3)
    content = share * latent[:, None] + (1.0 - share) * distractor  # (n, 3) in order l, v, a
    lengths = {"l": spec.len_text, "v": spec.len_vision, "a": spec.len_audio}
    valid = {m: np.full(n, length, dtype=np.int64) for m, length in lengths.items()}
    if spec.ragged:
        for m in ("v", "a"):
            lo = max(1, (lengths[m] + 1) // 2)
            valid[m] = rng.integers(lo, lengths[m] + 1, size=n, dtype=np.int64)
    x = {m: _modality(rng, fixed[m], spec, content[:, i], share[:, i], lengths[m], valid[m])
         for i, m in enumerate(("l", "v", "a"))}
    ids = np.char.add(f"{prefix}_", np.char.zfill(np.arange(n).astype(np.str_), 6))
    return Split(text=x["l"], audio=x["a"], vision=x["v"], labels=y.astype(np.float32), ids=ids,
                 reliability=r.astype(np.float32),
                 audio_lengths=valid["a"] if spec.ragged else None,
                 vision_lengths=valid["v"] if spec.ragged else None)


def make_synthetic(spec: SyntheticSpec | str = "small") -> DataSet:
    """Generate the three splits of ``spec`` (or of a preset name); see the module docstring."""
    if isinstance(spec, str):
        spec = synthetic_spec(spec)
    fixed_rng, *split_rngs = (np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(4))
    dims = {"l": spec.d_text, "v": spec.d_vision, "a": spec.d_audio}
    fixed = {m: _fixed(fixed_rng, d) for m, d in dims.items()}
    sizes = {"train": spec.n_train, "valid": spec.n_valid, "test": spec.n_test}
    splits = {name: _split(rng, fixed, spec, sizes[name], name) for name, rng in zip(sizes, split_rngs)}
    return DataSet(**splits, name=spec.describe(), label_kind="mosi")
