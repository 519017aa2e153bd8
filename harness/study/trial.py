"""A study point resolved to its EMOE configuration, and the typed ``Trial`` that carries it to the results.

``resolve_point`` is the one way a point (base + overrides + data dimensions + seed) becomes an
``EMOEConfig``: validation uses it with the sequence lengths left open (``OPEN_DIMS``) before the data
are read, the plan with the data's dimensions after. A ``Trial`` holds the resolved configuration and
travels, frozen, from the plan through Tune's config and the searcher to the worker and into the rows,
so the worker trains the configuration the driver checked and never builds it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from emoe.config import EMOEConfig, from_dict, to_dict
from harness.study.params import ParamValue, apply_overrides, build_config, config_id, trial_id

__all__ = ["OPEN_DIMS", "TRIAL_FILE", "Trial", "make_trial", "resolve_point"]

#: The file a trial writes into its Tune trial folder: its JSON form (``Trial.to_json``).
TRIAL_FILE = "trial.json"

#: Data dimensions used before the data are loaded: sequence lengths long enough for any kernel.
OPEN_DIMS: dict[str, ParamValue] = {"model.len_text": 1 << 20, "model.len_audio": 1 << 20,
                                    "model.len_vision": 1 << 20}


def resolve_point(base: Mapping[str, object], overrides: Mapping[str, ParamValue], dims: Mapping[str, ParamValue],
                  seed: int | None = None) -> EMOEConfig:
    """The configuration of a point: ``base`` with ``overrides``, the data's ``dims`` (dotted
    ``model.*`` fields) and the seed applied; raises ``emoe.config.ConfigError`` listing every problem."""
    extra: dict[str, ParamValue] = {} if seed is None else {"train.seed": seed}
    return build_config(apply_overrides(base, {**overrides, **dims, **extra}))


@dataclass(frozen=True)
class Trial:
    """One planned Tune trial: its identities, where it comes from (variant, seed, overrides), its config."""

    study: str
    trial_id: str
    config_id: str
    variant: str  # grid label, ablation variant or search trial name ("trial007")
    seed: int
    seed_index: int
    overrides: Mapping[str, ParamValue]  # the varied values (dotted paths)
    config: EMOEConfig = field(repr=False)
    phase: str = "tune"  # "tune", or "confirm": a top configuration trained again on a fresh seed

    def config_dict(self) -> dict[str, dict[str, ParamValue]]:
        """The configuration as nested plain data (tuples as lists)."""
        return to_dict(self.config)

    def to_json(self) -> dict[str, object]:
        """The trial as plain JSON data (ids, origin and the nested configuration); ``from_json`` reads it."""
        return {"study": self.study, "trial_id": self.trial_id, "config_id": self.config_id,
                "variant": self.variant, "seed": self.seed, "seed_index": self.seed_index,
                "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides.items()},
                "phase": self.phase, "emoe": self.config_dict()}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Trial:
        """The trial ``to_json`` wrote (a resumed study's trial from an earlier run); ``KeyError``,
        ``TypeError`` or ``ValueError`` when ``data`` is not such a form."""
        overrides = data["overrides"]
        emoe = data["emoe"]
        if not isinstance(overrides, dict) or not isinstance(emoe, dict):
            raise TypeError("a trial's overrides and configuration are mappings")
        return cls(study=str(data["study"]), trial_id=str(data["trial_id"]), config_id=str(data["config_id"]),
                   variant=str(data["variant"]), seed=int(str(data["seed"])), seed_index=int(str(data["seed_index"])),
                   overrides={str(k): cast("ParamValue", v) for k, v in overrides.items()},
                   config=from_dict(cast("dict[str, dict[str, ParamValue]]", emoe)),
                   phase=str(data.get("phase", "tune")))  # files written before phases were recorded

    def __getitem__(self, key: str) -> object:
        """Read access by the names of the results' columns and the plan's JSON form (``trial["seed"]``,
        ``trial["params"]`` for the overrides, ``trial["emoe"]`` for the nested configuration)."""
        if key == "params":
            return dict(self.overrides)
        if key == "emoe":
            return self.config_dict()
        if key in _FIELDS:
            return getattr(self, key)
        raise KeyError(key)


_FIELDS = frozenset({"study", "trial_id", "config_id", "variant", "seed", "seed_index", "overrides", "phase"})


def make_trial(study: str, variant: str, overrides: Mapping[str, ParamValue], cfg: EMOEConfig, *,
               data_key: str, seed_index: int, instance: str | None = None) -> Trial:
    """A ``Trial`` for a resolved configuration: ids from the config (less non-identity fields) and seed."""
    cid = config_id(cfg, data_key)
    seed = int(cfg.train.seed)
    return Trial(study=study, trial_id=trial_id(cid, seed, instance), config_id=cid, variant=variant,
                 seed=seed, seed_index=seed_index, overrides=dict(overrides), config=cfg)
