"""Which EMOE configurations can train as one stack (``emoe.stack``): the rule alone, without torch, so
that a study's planner (``harness.study.stacks``) decides the stacks without importing the model code.
"""

from __future__ import annotations

from emoe.config import LOSS_WEIGHTS, EMOEConfig, to_dict

__all__ = ["STACKABLE", "check_stackable"]

#: Fields that may differ between the members of one stack (everything else must be equal).
STACKABLE: frozenset[tuple[str, str]] = frozenset(
    {("model", f) for f in ("text_dropout", "embed_dropout", "attn_dropout_l", "attn_dropout_v", "attn_dropout_a",
                            "relu_dropout", "res_dropout", "out_dropout", "temperature", "fixed_weights")}
    | {("loss", f) for f in LOSS_WEIGHTS}
    | {("train", f) for f in ("lr", "seed", "weight_decay", "grad_clip", "plateau_patience", "plateau_factor",
                              "max_epochs", "early_stop", "min_delta")})


def check_stackable(cfgs: list[EMOEConfig]) -> list[str]:
    """Every reason the configurations cannot train as one stack, as ``"section.field: ..."`` strings."""
    if not cfgs:
        return ["members: need at least one configuration"]
    errors = []
    first = to_dict(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], start=1):
        now = to_dict(cfg)
        for sec, fields in first.items():
            for name, value in fields.items():
                if (sec, name) not in STACKABLE and now[sec][name] != value:
                    errors.append(f"{sec}.{name}: member {k} has {now[sec][name]!r}, member 0 {value!r} "
                                  "(only dropout rates, temperature, fixed weights, loss weights and training "
                                  "scalars may differ within a stack)")
    if cfgs[0].model.text_input != "features":
        errors.append("model.text_input: a fine-tuned BERT encoder is not stacked (use text features)")
    if cfgs[0].train.compile == "default":
        errors.append("train.compile: 'default' (torch.compile) is not used for stacks; 'off' or 'graphs' are")
    return errors
