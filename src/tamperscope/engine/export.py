"""A run's model as one self-describing ``.safetensors`` file: weights, model config, training recipe and the best
validation metrics in its metadata (no pickle); optionally with operating points chosen on validation data
(:mod:`tamperscope.engine.calibration`). This is how the bundled default model was made."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import MODEL_FILE, load_checkpoint, load_weights, read_weights_file, save_checkpoint
from ..errors import UserError
from ..run_folder import RunFolder
from .calibration import calibrate as choose_operating_points
from .loading import trained_image_size, training_recipe


@dataclass
class Exported:
    """What :func:`export_run` wrote: the file, the weights it took, the run's config, the metadata added
    (``extra``) and, when calibrated, the calibration and its validation summary."""

    path: Path
    weights: Path
    config: dict
    extra: dict
    calibration: dict | None = None
    validation: dict | None = None


def check_export_target(run: RunFolder, out: Path) -> None:
    """One-line errors for an output that is not a ``.safetensors`` file or would replace a run's own files."""
    if not run.path.is_dir():
        raise UserError(f"{run.path}: not a run folder", option="run")
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must end in .safetensors" +
                        (" (for ONNX: tamperscope export-onnx CHECKPOINT FILE.onnx)" if out.suffix == ".onnx" else ""),
                        option="out")
    if out.resolve() == run.weights_file.resolve():
        raise UserError(f"{out}: would overwrite the run's own weights; choose another path", option="out")
    inside_run = run.path.resolve() in out.resolve().parents
    if out.exists() and (inside_run or out.name == MODEL_FILE or RunFolder(out.parent).exists()):
        raise UserError(f"{out}: would overwrite a run's weights or saved state; choose another path", option="out")


def export_run(run_path: str | Path, out: str | Path, *, weights: str = "selected", calibrate: str | None = None,
               max_false_alarm: float = 0.10, device="cpu", on_mismatch: str = "skip",
               progress: bool = True) -> Exported:
    """Write the run's model selected on val (``weights="selected"``) or its last saved state (``"last"``) to
    ``out``; with ``calibrate`` (validation data, never a test set) its pixel and image operating points too."""
    run, out = RunFolder(run_path), Path(out)
    check_export_target(run, out)
    cfg = run.read_config()
    model = load_checkpoint(run.path, map_location="cpu")
    source = run.weights_file
    if weights == "last":
        source = run.last_state_weights()
        load_weights(model, read_weights_file(source), str(source))
    extra = {"train": training_recipe(cfg), "source_run": run.path.name, "weights": weights,
             "val": run.best_val_metrics() if weights == "selected" else None}
    exported = Exported(out, source, cfg, extra)
    if calibrate:
        exported.calibration, exported.validation = choose_operating_points(
            model, calibrate, image_size=trained_image_size(cfg), max_false_alarm=max_false_alarm, device=device,
            on_mismatch=on_mismatch, progress=progress)
        model.calibration = exported.calibration
    save_checkpoint(model, out, extra=extra)
    return exported
