"""`tamperscope models`: the registered models with parameters, GMACs at 512 and paper."""
from __future__ import annotations

import json

NAME = "models"
HELP = "list the registered models (name, params M, GMACs @512, paper)"


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--no-gmacs", action="store_true", help="skip the (meta-device) GMAC count")


def run(args) -> int:
    from ..engine.profile import meta_complexity
    from ..registry import get_entry, list_models

    rows = []
    for name in list_models():
        entry = get_entry(name)
        info = meta_complexity(name, with_gmacs=not args.no_gmacs)
        rows.append({"name": name, "params_m": info["params_m"], "gmacs": info["gmacs"],
                     "stages": list(entry.stages), "paper": entry.paper})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'model':<18} {'params (M)':>10} {'GMACs@512':>10}  paper")
    for r in rows:
        p = f"{r['params_m']:.2f}" if r["params_m"] is not None else "-"
        g = f"{r['gmacs']:.1f}" if r["gmacs"] is not None else "-"
        print(f"{r['name']:<18} {p:>10} {g:>10}  {r['paper']}")
    return 0
