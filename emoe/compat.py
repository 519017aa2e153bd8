"""Load checkpoints of the official EMOE implementation into this project's model.

Reference name -> this model's name (m is l, v or a; N a layer index):

    proj_m.weight                            -> proj.m.weight            (only when d_m != d_model)
    encoder_c.weight                         -> shared_conv.weight
    self_attentions_m.layers.N.<param>       -> experts.m.layers.N.<param>   (self_attn.in_proj_weight,
        self_attn.in_proj_bias, self_attn.out_proj.*, fc1.*, fc2.*, layer_norms.0.*, layer_norms.1.*)
    self_attentions_m.layer_norm.*           -> experts.m.layer_norm.*
    proj1_m / proj2_m / out_layer_m          -> heads.m.fc1 / fc2 / out
    proj1_c / proj2_c / out_layer_c          -> fused_head.fc1 / fc2 / out
    Router.l1 / Router.l2                    -> router.l1 / router.l2     (learned router only)
    transfer_v_ali / transfer_a_ali          -> router.transfer_v / transfer_a (unaligned data only)
    text_model.<rest>                        -> text_encoder.<rest>       (text_input='bert' only)

Ignored: the unused per-modality 1x1 convs ``encoder_l/v/a``, the ``version`` and
``embed_positions._float_tensor`` buffers, ``proj_m`` when d_m == d_model (the reference defines it but
skips it), the transfer maps on aligned data (defined, never used), and the router's weights when the
configuration uses a uniform or fixed router. A leading ``module.`` (DataParallel) is stripped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from emoe.config import ModelConfig
from emoe.model import EMOE

__all__ = ["CheckpointError", "load_reference_checkpoint", "load_reference_state_dict", "map_reference_keys"]

_M = r"(?P<m>[lva])"
_RENAMES: tuple[tuple[str, str], ...] = (
    (rf"proj_{_M}\.(?P<rest>weight)", r"proj.\g<m>.\g<rest>"),
    (r"encoder_c\.(?P<rest>weight)", r"shared_conv.\g<rest>"),
    (rf"self_attentions_{_M}\.(?P<rest>layers\.\d+\..+|layer_norm\.(weight|bias))", r"experts.\g<m>.\g<rest>"),
    (rf"proj1_{_M}\.(?P<rest>weight|bias)", r"heads.\g<m>.fc1.\g<rest>"),
    (rf"proj2_{_M}\.(?P<rest>weight|bias)", r"heads.\g<m>.fc2.\g<rest>"),
    (rf"out_layer_{_M}\.(?P<rest>weight|bias)", r"heads.\g<m>.out.\g<rest>"),
    (r"proj1_c\.(?P<rest>weight|bias)", r"fused_head.fc1.\g<rest>"),
    (r"proj2_c\.(?P<rest>weight|bias)", r"fused_head.fc2.\g<rest>"),
    (r"out_layer_c\.(?P<rest>weight|bias)", r"fused_head.out.\g<rest>"),
    (r"Router\.(?P<rest>l[12]\.(weight|bias))", r"router.\g<rest>"),
    (r"transfer_(?P<m>[va])_ali\.(?P<rest>weight|bias)", r"router.transfer_\g<m>.\g<rest>"),
    (r"text_model\.(?P<rest>.+)", r"text_encoder.\g<rest>"),
)
_ALWAYS_IGNORED = (
    r"encoder_[lva]\.weight",
    r"self_attentions_[lva]\.version",
    r"self_attentions_[lva]\.embed_positions\._float_tensor",
)


class CheckpointError(KeyError):
    """A reference state dict that does not fit the configuration; ``problems`` lists every issue."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("reference checkpoint does not fit the model:\n  " + "\n  ".join(self.problems))

    def __str__(self) -> str:
        return str(self.args[0])


def _ignored_for(cfg: ModelConfig, d_text: int) -> list[str]:
    """Reference keys that the configured model has no use for (see the module docstring)."""
    patterns = list(_ALWAYS_IGNORED)
    for m, d in (("l", d_text), ("v", cfg.d_vision), ("a", cfg.d_audio)):
        if d == cfg.d_model:
            patterns.append(rf"proj_{m}\.weight")
    if cfg.aligned or cfg.router != "learned":
        patterns.append(r"transfer_[va]_ali\.(weight|bias)")
    if cfg.router != "learned":
        patterns.append(r"Router\.l[12]\.(weight|bias)")
    return patterns


def map_reference_keys(keys: list[str], cfg: ModelConfig, *, d_text: int | None = None
                       ) -> tuple[dict[str, str], list[str], list[str]]:
    """Split reference keys into (reference -> model renames, ignored keys, unknown keys)."""
    ignored_patterns = [re.compile(p) for p in _ignored_for(cfg, cfg.d_text if d_text is None else d_text)]
    renames: dict[str, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key in keys:
        name = key.removeprefix("module.")
        if any(p.fullmatch(name) for p in ignored_patterns):
            ignored.append(key)
            continue
        for pattern, repl in _RENAMES:
            if re.fullmatch(pattern, name):
                renames[key] = re.sub(pattern, repl, name)
                break
        else:
            unknown.append(key)
    return renames, ignored, unknown


def load_reference_state_dict(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig, *,
                              text_encoder: torch.nn.Module | None = None) -> EMOE:
    """Build ``EMOE`` for ``cfg`` and fill it from a state dict saved by the reference implementation.

    The result gives the reference's outputs on the same inputs in eval mode. Every unknown reference
    key, every model parameter the checkpoint lacks and every shape disagreement is reported at once
    in a ``CheckpointError``. A flattened learned router is required to load a reference router.
    """
    if cfg.router == "learned" and cfg.router_input != "flatten":
        raise CheckpointError(["router_input: reference checkpoints hold a flattened router; "
                               "use router_input='flatten' (or a uniform/fixed router to drop it)"])
    model = EMOE(cfg, text_encoder=text_encoder)
    own = model.state_dict()
    renames, _, unknown = map_reference_keys(list(state_dict), cfg, d_text=model.dims["l"])
    problems = [f"unexpected key in checkpoint: {k}" for k in unknown]
    mapped: dict[str, torch.Tensor] = {}
    for ref_key, name in renames.items():
        if name not in own:
            problems.append(f"unexpected key in checkpoint: {ref_key} (no {name} in this configuration)")
        elif name in mapped:
            problems.append(f"duplicate key in checkpoint: {ref_key} (maps to {name} again)")
        elif tuple(state_dict[ref_key].shape) != tuple(own[name].shape):
            problems.append(f"shape mismatch: {ref_key} is {tuple(state_dict[ref_key].shape)}, "
                            f"the model's {name} is {tuple(own[name].shape)}")
        else:
            mapped[name] = state_dict[ref_key]
    inverse = {v: k for k, v in renames.items()}
    problems += [f"missing from checkpoint: {name}" for name in own if name not in mapped
                 and name not in inverse]
    if problems:
        raise CheckpointError(problems)
    model.load_state_dict(mapped, strict=True)
    return model


def load_reference_checkpoint(path: str | Path, cfg: ModelConfig, *,
                              text_encoder: torch.nn.Module | None = None) -> EMOE:
    """Read a reference ``.pth`` state dict (tensors only: ``weights_only=True``) and load it."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise CheckpointError([f"{path}: expected a state dict, found {type(state).__name__}"])
    return load_reference_state_dict(state, cfg, text_encoder=text_encoder)
