"""`tamperscope models`: the registered models with parameters, GMACs at 512 and paper."""
from __future__ import annotations

import json

NAME = "models"
HELP = "list the registered models (name, params M, GMACs @512, paper)"


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--no-gmacs", action="store_true", help="skip the (meta-device) GMAC count")


def model_row(name: str, with_gmacs: bool = True) -> dict:
    """One model's row. A model whose cost depends on an inference option lists labelled configs in
    ``complexity_variants`` (e.g. DiffIML with and without flip TTA): ``gmacs_variants`` maps each label to its
    GMACs, and ``gmacs`` stays the default config's."""
    from ..engine.profile import meta_complexity
    from ..registry import get_entry

    entry = get_entry(name)
    info = meta_complexity(name, with_gmacs=with_gmacs)
    row = {"name": name, "params_m": info["params_m"], "gmacs": info["gmacs"]}
    variants = entry.cls.complexity_variants
    if variants and with_gmacs:
        row["gmacs_variants"] = {label: info["gmacs"] if not overrides else
                                 meta_complexity(name, with_gmacs=True, **overrides)["gmacs"]
                                 for label, overrides in variants.items()}
    return row | {"stages": list(entry.stages), "paper": entry.paper}


def gmacs_cell(row: dict) -> str:
    """``60.5``, or every labelled count: ``1358.5 (flip TTA, default) / 679.3 (no TTA)``."""
    if row.get("gmacs_variants"):
        return " / ".join(f"{'-' if g is None else f'{g:.1f}'} ({label})" for label, g in row["gmacs_variants"].items())
    return f"{row['gmacs']:.1f}" if row["gmacs"] is not None else "-"


def run(args) -> int:
    from ..registry import list_models

    rows = [model_row(name, with_gmacs=not args.no_gmacs) for name in list_models()]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    cells = [gmacs_cell(r) for r in rows]
    width = max([10] + [len(c) for c in cells])
    print(f"{'model':<18} {'params (M)':>10} {'GMACs@512':>{width}}  paper")
    for r, g in zip(rows, cells):
        p = f"{r['params_m']:.2f}" if r["params_m"] is not None else "-"
        print(f"{r['name']:<18} {p:>10} {g:>{width}}  {r['paper']}")
    return 0
