"""`tamperscope export RUN FILE.safetensors`: a run's selected model as one self-describing file (weights,
model config, training recipe and the best validation metrics in the safetensors metadata; no pickle). This is
how the bundled default model was made and how a model is shared or passed to ``predict --checkpoint``."""
from __future__ import annotations

import json
from pathlib import Path

NAME = "export"
HELP = "write a run's selected model as one .safetensors file (weights + config + recipe)"


def add_arguments(p):
    p.add_argument("run", help="run folder written by `tamperscope train`")
    p.add_argument("out", help="output file, ending in .safetensors")


def best_val_metrics(run: Path) -> dict | None:
    """The validation row of the epoch the run selected (``metrics.jsonl`` + ``trainer_state.json``)."""
    state_file, log = run / "trainer_state.json", run / "metrics.jsonl"
    if not (state_file.is_file() and log.is_file()):
        return None
    best = (json.loads(state_file.read_text()).get("best") or {}).get("epoch")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    match = [r for r in rows if r.get("type") == "val" and r.get("epoch") == best]
    return match[-1] if match else None


def run(args) -> int:
    from ..checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
    from ..errors import UserError

    src, out = Path(args.run), Path(args.out)
    if not src.is_dir():
        raise UserError(f"{src}: not a run folder")
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must end in .safetensors")
    if out.resolve() == (src / "model.safetensors").resolve():
        raise UserError(f"{out}: would overwrite the run's own weights; choose another path")
    cfg = read_checkpoint_config(src)
    model = load_checkpoint(src, map_location="cpu")
    extra = {"train": cfg.get("train") or {}, "source_run": src.name, "val": best_val_metrics(src)}
    save_checkpoint(model, out, extra=extra)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, model {cfg['model']}, "
          f"trained at {extra['train'].get('image_size', '?')} px)")
    return 0
