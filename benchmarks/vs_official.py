"""Our networks against the official implementations of the same networks, side by side in one process
(issue 20): CPU inference at 512², batch 1, and one training step (forward + backward + AdamW step) at 256²,
batch 2, both models at random initialisation with equal configurations.

Pairs (each needs the official code; a pair whose source is not given is skipped with a one-line note):

* ``segformer`` — ``segformer-b2`` vs transformers' ``SegformerForSemanticSegmentation`` (b2 config, 1 label,
  LayerNorm eps 1e-5 on both sides); needs ``transformers`` importable.
* ``frdnet`` — ``frdnet`` vs ``FRDNet_Main`` of chchshshhh/FRD-Net (``--frdnet-repo DIR``, a checkout of that
  repository; its ``IMDLBenCo/modules/backbones/FRDNet.py`` is imported, see :func:`import_model_file`). The
  official model is hard-wired to 512² inputs in places (its ICM reshapes level-1 centres to width 8), so its
  256² training step clusters fewer centres than ours (16 / 4 / 2 vs 64 / 16 / 2): the row says so.
* ``nfavit`` — ``nfavit`` (``brgen_compat``, LayerNorm eps 1e-5, ``cls_weight`` 0.5, frozen random noise branch
  as in the official code) vs ``NFA_ViT_modify1`` of clpbc/BR-Gen (``--brgen-repo DIR``; its
  ``model_zoo/nfa_vit/nfa_vit.py``). BR-Gen ships without IMDL-BenCo, whose registry decorator its model file
  imports: a stand-in is used (:func:`import_model_file`). Its constructor insists on weight files:
  it gets the state dict of a freshly initialised DnCNN of the same shape for Noiseprint++ and empty state dicts
  for the two MiTs (it loads those with ``strict=False``), so every weight stays at random initialisation.
* ``diffiml`` — ``diffiml`` (8 DDIM steps, flip TTA, x̂₀ clipped to ±1 as the official sampler) vs ``DiffIML`` of
  scu-zjz/DiffIML (``--diffiml-repo DIR``; its ``IMDLBenCo/model_zoo/diffiml/diffiml.py``), ensemble N = 1
  (inference and training) and N = 5 (inference only: training does not depend on N).

Before timing a pair the parameter counts (all parameters, frozen ones included) are compared; a pair whose
counts differ is not timed and the row shows both counts. Parameters that an official model creates but never
uses (NFA-ViT's decoder holds γ5 and γ6 for stages that do not exist) are named per pair, checked to get no
gradient from one official training step at 64², and left out of its count; the row says so. Inference is what
each code base runs at test time (ours: ``model(image)`` under ``torch.inference_mode``; the official models:
their ``forward`` in eval mode, which for FRD-Net and NFA-ViT also computes their loss against a zero mask).
A training step is ``model.training_step(batch)["total"]`` here and the official ``forward(...)["backward_loss"]``
there (for transformers: BCE of the upsampled logits), then ``backward()``, the optimizer step and ``zero_grad()``:
ours the optimizer ``tamperscope train`` builds (fused AdamW), the official code torch's default AdamW as its
training scripts build it.

Timing: the same torch in one process, ``--threads`` threads (default 2), ``--warmup`` dropped rounds, then
``--iters`` rounds that alternate the order (ours, official / official, ours); the report gives medians and the
"paired" ratio ours/official = the median of the per-round ratios (helpers in ``ab_timing.py``), the load average
before and after, torch version and machine. Lower ratios are better for us. ``--profile K`` then profiles one call
of each side (torch.profiler, self-CPU time) and lists the K largest operators of each side, side by side.

Environment (the official code needs packages the project does not): a separate venv outside the repository,
with the torch the project's venv does not pin::

    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/benchvenv/bin/pip install -e . transformers timm einops networkx   # + diffusers for DiffIML
    # FRD-Net's clustering module also imports torch_scatter; DiffIML's model file imports torchinfo,
    # matplotlib, tqdm and diffusers

Run (``nice`` keeps a shared machine usable)::

    nice -n 10 /work/benchvenv/bin/python benchmarks/vs_official.py --brgen-repo /work/official/BR-Gen \\
        --frdnet-repo /work/official/FRD-Net --diffiml-repo /work/official/DiffIML --out vs_official.md
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import interleaved, load_average, machine, median, paired_ratio, param_count  # noqa: E402

PAIRS = ("segformer", "frdnet", "nfavit", "diffiml")

# files that must exist in each official folder (checked before anything is built)
REQUIRED = {
    "frdnet": ("--frdnet-repo", ("IMDLBenCo/modules/backbones/FRDNet.py", "debmodule/fecflow_deta_cls7diff.py")),
    "nfavit": ("--brgen-repo", ("model_zoo/nfa_vit/nfa_vit.py", "model_zoo/nfa_vit/DnCNN.py")),
    "diffiml": ("--diffiml-repo", ("IMDLBenCo/model_zoo/diffiml/diffiml.py",)),
}


class PairError(Exception):
    """A pair that cannot be built (official code not importable, …): reported in one line, the others go on."""


@dataclass
class Row:
    """One line of the table: an inference function per side and, optionally, a training step per side."""
    label: str
    ours_infer: Callable[[], object]
    official_infer: Callable[[], object]
    ours_train: Callable[[], object] | None = None
    official_train: Callable[[], object] | None = None
    note: str = ""


@dataclass
class Pair:
    name: str
    ours: torch.nn.Module
    official: torch.nn.Module
    rows: list[Row] = field(default_factory=list)
    #: parameters the official model holds but its forward never uses (checked by :func:`verify_unused`)
    official_unused: tuple[str, ...] = ()
    #: one official training loss at a small size, for :func:`verify_unused`
    official_loss: Callable[[dict], torch.Tensor] | None = None


def check_folders(args) -> None:
    """One line naming the folder and what it lacks, for every official folder given that is not usable."""
    for pair, (flag, files) in REQUIRED.items():
        folder = getattr(args, flag[2:].replace("-", "_"))
        if folder is None:
            continue
        root = Path(folder)
        if not root.is_dir():
            raise SystemExit(f"vs_official: {flag} {folder}: no such folder")
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise SystemExit(f"vs_official: {flag} {folder}: not a checkout of the official {pair} code "
                             f"(no {', '.join(missing)})")


def parity(ours: int, official: int, unused: int = 0, unused_names: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Whether our count equals the official count less its unused parameters, and the text of the table cell."""
    extra = (f"; the official model also holds {unused:,} parameters its forward never uses "
             f"({', '.join(unused_names)})" if unused else "")
    if ours == official - unused:
        return True, f"yes ({ours / 1e6:.2f} M{extra})"
    return False, f"**no**: ours {ours:,} vs official {official:,}{extra}"


def verify_unused(pair: Pair, batch: dict) -> int:
    """Number of parameters in ``pair.official_unused``, after checking that each exists, is trainable and gets no
    gradient from one official forward + backward (so it cannot cost time); raises :class:`PairError` otherwise."""
    if not pair.official_unused:
        return 0
    params = dict(pair.official.named_parameters())
    missing = [n for n in pair.official_unused if n not in params or not params[n].requires_grad]
    if missing:
        raise PairError(f"the official model has no trainable parameter {', '.join(missing)}")
    pair.official.train()
    pair.official_loss(batch).backward()
    used = [n for n in pair.official_unused if params[n].grad is not None]
    pair.official.zero_grad(set_to_none=True)
    if used:
        raise PairError(f"official parameters {', '.join(used)} are used by its forward, not dead weight")
    return sum(params[n].numel() for n in pair.official_unused)


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]):
    def step():
        model.train()
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def inference(model: torch.nn.Module, fn: Callable[[], object]):
    def run():
        model.eval()
        with torch.inference_mode():
            fn()
    return run


def adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The official side's optimizer: torch's default AdamW, as the official training scripts build it."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)


def our_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """Our side's optimizer: the one ``tamperscope train`` builds (fused AdamW; no decay on norms and biases)."""
    from tamperscope.engine.train import build_optimizer

    return build_optimizer(model, {"optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.05})


def import_model_file(repo: str, dotted: str, flag: str):
    """Import the module ``dotted`` (e.g. ``IMDLBenCo.modules.backbones.FRDNet``) from the checkout ``repo``
    without running the ``__init__.py`` of the packages above it: IMDL-BenCo's ``__init__`` imports its datasets
    and its whole model zoo (and BR-Gen's ``model_zoo/__init__`` names a class its file does not define), while the
    model file needs only its own imports. Each package above it becomes a bare package whose ``__path__`` is its
    folder, so relative imports inside the checkout still resolve; ``repo`` also goes first on ``sys.path`` for
    absolute ones (``from debmodule… import …``). The one thing the model files take from IMDL-BenCo, the
    ``IMDLBenCo.registry.MODELS`` decorator, comes from the checkout's ``IMDLBenCo/registry.py`` where it has one,
    else from a stand-in whose ``register_module()`` returns the class unchanged. Any failure becomes one
    :class:`PairError` line naming the folder."""
    root = Path(repo).resolve()
    parts = dotted.split(".")
    top = sys.modules.get(parts[0])
    if top is not None and list(getattr(top, "__path__", [])) != [str(root / parts[0])]:
        for name in [m for m in sys.modules if m == parts[0] or m.startswith(parts[0] + ".")]:
            del sys.modules[name]  # another checkout's package of the same name: its models keep their modules
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name in sys.modules:
            continue
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*parts[:i]))]
        package.__package__ = name
        sys.modules[name] = package
        if i > 1:
            setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], package)
    if not (root / "IMDLBenCo" / "registry.py").is_file():
        ensure_imdlbenco_registry()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # their modules print install hints on import
            return importlib.import_module(dotted)
    except Exception as e:  # noqa: BLE001 - any import failure of foreign code is reported, not raised
        raise PairError(f"{flag} {repo}: importing {dotted} failed: {type(e).__name__}: {e}") from e


def ensure_imdlbenco_registry() -> None:
    """A stand-in ``IMDLBenCo.registry.MODELS`` (``register_module()`` returns the class unchanged), unless some
    ``IMDLBenCo.registry`` is already imported."""
    if "IMDLBenCo.registry" in sys.modules:
        return
    registry = types.ModuleType("IMDLBenCo.registry")

    class _Registry:
        def register_module(self, *a, **k):
            return lambda obj: obj
    registry.MODELS = _Registry()
    if "IMDLBenCo" not in sys.modules:
        package = types.ModuleType("IMDLBenCo")
        package.__path__ = []
        sys.modules["IMDLBenCo"] = package
    sys.modules["IMDLBenCo"].registry = registry
    sys.modules["IMDLBenCo.registry"] = registry


def data(size: int, batch: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, size // 4: size // 2, size // 4: size // 2] = 1.0
    edge = (F.max_pool2d(mask, 7, 1, 3) - (-F.max_pool2d(-mask, 7, 1, 3))).clamp(0, 1)
    return {"image": torch.randn(batch, 3, size, size, generator=g), "mask": mask, "edge": edge,
            "label": torch.ones(batch)}


# --------------------------------------------------------------------------------------------- pairs

def build_segformer(args) -> Pair:
    try:
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError as e:
        raise PairError(f"transformers is not importable ({e}); pip install transformers") from e
    from tamperscope import create_model

    torch.manual_seed(args.seed)
    ours = create_model("segformer-b2", ln_eps=1e-5)
    cfg = SegformerConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_attention_heads=[1, 2, 5, 8],
                          sr_ratios=[8, 4, 2, 1], decoder_hidden_size=768, num_labels=1)
    hf = SegformerForSemanticSegmentation(cfg)
    return Pair("SegFormer-b2 vs transformers `SegformerForSemanticSegmentation`", ours, hf)


def segformer_rows(pair: Pair, x: torch.Tensor, batch: dict) -> None:
    ours, hf = pair.ours, pair.official

    def hf_logits(img):
        return F.interpolate(hf(pixel_values=img).logits, size=img.shape[-2:], mode="bilinear", align_corners=False)
    o_opt, h_opt = our_optimizer(ours), adamw(hf)
    pair.rows.append(Row(
        pair.name, inference(ours, lambda: ours(x)), inference(hf, lambda: hf_logits(x)),
        optimizer_step(ours, o_opt, lambda: ours.training_step(batch)["total"]),
        optimizer_step(hf, h_opt, lambda: F.binary_cross_entropy_with_logits(hf_logits(batch["image"]),
                                                                              batch["mask"]))))


def build_frdnet(args) -> Pair:
    from tamperscope import create_model

    mod = import_model_file(args.frdnet_repo, "IMDLBenCo.modules.backbones.FRDNet", "--frdnet-repo")
    torch.manual_seed(args.seed)
    ours = create_model("frdnet", ln_eps=1e-6)
    with tempfile.TemporaryDirectory() as d:
        empty = Path(d) / "empty.pth"  # the official constructor loads MiT weights with strict=False
        torch.save({}, empty)
        with contextlib.redirect_stdout(io.StringIO()):
            official = mod.FRDNet_Main(str(empty))
    return Pair("FRD-Net vs official FRD-Net", ours, official)


def frdnet_rows(pair: Pair, x: torch.Tensor, batch: dict) -> None:
    ours, off = pair.ours, pair.official
    zeros = torch.zeros(x.shape[0], 1, *x.shape[-2:])
    o_opt, f_opt = our_optimizer(ours), adamw(off)
    pair.rows.append(Row(
        pair.name, inference(ours, lambda: ours(x)), inference(off, lambda: off(x, zeros, zeros)),
        optimizer_step(ours, o_opt, lambda: ours.training_step(batch)["total"]),
        optimizer_step(off, f_opt, lambda: off(batch["image"], batch["mask"], batch["edge"])["backward_loss"]),
        note=("official ICM reshapes level-1 centres to width 8 (built for 512²): at 256² its levels "
              "hold 16 / 4 / 2 centres, ours 64 / 16 / 2")))


def build_nfavit(args) -> Pair:
    from tamperscope import create_model

    mod = import_model_file(args.brgen_repo, "model_zoo.nfa_vit.nfa_vit", "--brgen-repo")
    dncnn = importlib.import_module("model_zoo.nfa_vit.DnCNN")
    torch.manual_seed(args.seed)
    # random Noiseprint++ weights on both sides are the point here, not a mistake to warn about
    warnings.filterwarnings("ignore", message="nfavit: Noiseprint\\+\\+ runs with random weights")
    ours = create_model("nfavit", brgen_compat=True, ln_eps=1e-5, cls_weight=0.5, train_noise_branch=False)
    with tempfile.TemporaryDirectory() as d:
        np_file, empty = Path(d) / "np.pth", Path(d) / "empty.pth"
        fresh = dncnn.DnCNN(nplanes_in=3, nplanes_out=1, features=64, kernel=3, depth=17, activation="relu",
                            lastact="linear", residual=True, bn=True)
        torch.save(fresh.layers.state_dict(), np_file)
        torch.save({}, empty)
        official = mod.NFA_ViT_modify1(str(np_file), str(empty), str(empty))
    # its decoder ("Multiple") creates six per-channel γ but weighs only four stages with γ1..γ4
    return Pair("NFA-ViT vs official NFA-ViT", ours, official,
                official_unused=("seg_decoder.gamma5", "seg_decoder.gamma6"),
                official_loss=lambda b: official(b["image"], b["mask"], b["label"])["backward_loss"])


def nfavit_rows(pair: Pair, x: torch.Tensor, batch: dict) -> None:
    ours, off = pair.ours, pair.official
    zeros, label = torch.zeros(x.shape[0], 1, *x.shape[-2:]), torch.zeros(x.shape[0])
    o_opt, f_opt = our_optimizer(ours), adamw(off)
    pair.rows.append(Row(
        pair.name, inference(ours, lambda: ours(x)), inference(off, lambda: off(x, zeros, label)),
        optimizer_step(ours, o_opt, lambda: ours.training_step(batch)["total"]),
        optimizer_step(off, f_opt, lambda: off(batch["image"], batch["mask"], batch["label"])["backward_loss"])))


def build_diffiml(args) -> Pair:
    from tamperscope import create_model

    mod = import_model_file(args.diffiml_repo, "IMDLBenCo.model_zoo.diffiml.diffiml", "--diffiml-repo")
    torch.manual_seed(args.seed)
    ours = create_model("diffiml", num_inference_steps=8, ensemble_size=1, flip_tta=True, sample_clip=1.0)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints that its LightVAE is random and frozen
        official = mod.DiffIML(backbone="segformer_b3", ch=128, pretrain=False, infer_time=1,
                               num_inference_steps=8, light_vae_weights="", prior_rate=0.1, seg_weight=0.2)
    return Pair("DiffIML, 8 DDIM steps", ours, official)


def diffiml_rows(pair: Pair, x: torch.Tensor, batch: dict) -> None:
    ours, off = pair.ours, pair.official

    def members(n, fn):
        def run():
            ours.ensemble_size, off.infer_time = n, n
            fn()
        return run
    o_opt, f_opt = our_optimizer(ours), adamw(off)
    pair.rows.append(Row(
        f"{pair.name}, N=1 vs official", members(1, inference(ours, lambda: ours(x))),
        members(1, inference(off, lambda: off(x))),
        optimizer_step(ours, o_opt, lambda: ours.training_step(batch)["total"]),
        optimizer_step(off, f_opt, lambda: off(batch["image"], batch["mask"], batch["edge"])["backward_loss"])))
    pair.rows.append(Row(f"{pair.name}, N=5 vs official", members(5, inference(ours, lambda: ours(x))),
                         members(5, inference(off, lambda: off(x)))))


BUILDERS = {"segformer": (build_segformer, segformer_rows), "frdnet": (build_frdnet, frdnet_rows),
            "nfavit": (build_nfavit, nfavit_rows), "diffiml": (build_diffiml, diffiml_rows)}


# --------------------------------------------------------------------------------------------- report

def time_row(row: Row, rounds: int, warmup: int, profile_top: int = 0) -> dict:
    """The row's interleaved timings and, with ``profile_top``, one profiled call of each side after them."""
    out: dict = {}
    measures = {"inference": (row.ours_infer, row.official_infer)}
    if row.ours_train is not None:
        measures["train"] = (row.ours_train, row.official_train)
    for key, (ours, official) in measures.items():
        out[key] = summary(interleaved({"ours": ours, "official": official}, rounds, warmup))
        if profile_top:
            out[key]["profile"] = {"ours": profile_call(ours, profile_top),
                                   "official": profile_call(official, profile_top)}
    return out


def profile_call(fn: Callable[[], object], top: int) -> dict:
    """Self-CPU time per operator of one call of ``fn`` (torch.profiler, CPU activity): the total in ms and the
    ``top`` largest operators as ``{name: [self-CPU ms, calls]}``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    largest = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"total_ms": sum(e.self_cpu_time_total for e in events) / 1e3,
            "ops": {e.key: [e.self_cpu_time_total / 1e3, e.count] for e in largest}}


def profile_table(label: str, profiled: dict) -> list[str]:
    """Markdown lines: the union of both sides' largest operators, self-CPU ms (calls), largest first."""
    ours, official = profiled["ours"], profiled["official"]
    names = sorted(set(ours["ops"]) | set(official["ops"]),
                   key=lambda n: -max(ours["ops"].get(n, [0])[0], official["ops"].get(n, [0])[0]))

    def ms(side, name):
        value = side["ops"].get(name)
        return "—" if value is None else f"{value[0]:.1f} ({value[1]})"
    lines = ["", f"{label}: self-CPU ms (calls) of one call; total ours {ours['total_ms']:.1f} ms, official "
                 f"{official['total_ms']:.1f} ms (— : not among that side's largest)", "",
             "| operator | ours | official |", "|---|---|---|"]
    return lines + [f"| `{name}` | {ms(ours, name)} | {ms(official, name)} |" for name in names]


def summary(times: dict[str, list[float]]) -> dict:
    o, f = median(times["ours"]), median(times["official"])
    return {"ours_s": times["ours"], "official_s": times["official"], "ours_median_s": o, "official_median_s": f,
            "ratio": o / f, "paired_ratio": paired_ratio(times["ours"], times["official"])}


def cell(result: dict | None) -> str:
    if not result:
        return "—"
    return (f"{result['ours_median_s']:.2f} s / {result['official_median_s']:.2f} s = {result['ratio']:.2f} "
            f"[{result['paired_ratio']:.2f}]")


def markdown(report: dict) -> str:
    lines = [
        f"`{report['command']}`",
        "",
        f"torch {report['torch']}, {report['machine']}; {report['rounds']} rounds after {report['warmup']} "
        f"warm-up; load average (1, 5, 15 min) before {report['load_average_before']}, after "
        f"{report['load_average_after']}; {report['date']}.",
        "",
        f"| network | params equal | inference {report['infer_size']}², batch 1: ours / official = ratio "
        f"[paired] | train step {report['train_size']}², batch {report['train_batch']}: ours / official = ratio "
        "[paired] | note |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['network']} | {r['params']} | {cell(r.get('inference'))} | {cell(r.get('train'))} "
                     f"| {r.get('note', '')} |")
    if report["skipped"]:
        lines += ["", "Not measured:", ""] + [f"* {s}" for s in report["skipped"]]
    profiled = [(r["network"], key, r[key]["profile"]) for r in report["rows"] for key in ("inference", "train")
                if "profile" in r.get(key, {})]
    if profiled:
        lines += ["", "Where the time goes (torch.profiler, self-CPU time per operator, one call of each side "
                      "after the timed rounds):"]
        for network, key, profile in profiled:
            lines += profile_table(f"{network}, {key}", profile)
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    wanted = args.pairs
    x = torch.randn(1, 3, args.infer_size, args.infer_size, generator=torch.Generator().manual_seed(args.seed))
    batch = data(args.train_size, args.train_batch, args.seed)
    report = {"command": " ".join(["python", "benchmarks/vs_official.py", *args.argv]), "torch": torch.__version__,
              "machine": machine(), "threads": args.threads, "rounds": args.iters, "warmup": args.warmup,
              "infer_size": args.infer_size, "train_size": args.train_size, "train_batch": args.train_batch,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_before": load_average(),
              "rows": [], "skipped": []}
    for name in wanted:
        flag = REQUIRED.get(name, (None,))[0]
        if flag and getattr(args, flag[2:].replace("-", "_")) is None:
            msg = f"{name}: skipped, no {flag} given"
            print(msg, flush=True)
            report["skipped"].append(msg)
            continue
        build, rows = BUILDERS[name]
        try:
            pair = build(args)
        except PairError as e:
            msg = f"{name}: not measured: {e}"
            print(msg, flush=True)
            report["skipped"].append(msg)
            continue
        n_ours, n_off = param_count(pair.ours), param_count(pair.official)
        try:
            unused = verify_unused(pair, data(64, 2, args.seed))
        except PairError as e:
            msg = f"{name}: not measured: {e}"
            print(msg, flush=True)
            report["skipped"].append(msg)
            continue
        equal, text = parity(n_ours, n_off, unused, pair.official_unused)
        print(f"{name}: parameters ours {n_ours:,}, official {n_off:,}"
              + (f" ({unused:,} of them unused by its forward)" if unused else ""), flush=True)
        rows(pair, x, batch)
        for row in pair.rows:
            entry = {"network": row.label, "params": text, "params_ours": n_ours, "params_official": n_off,
                     "params_official_unused": unused, "params_equal": equal, "note": row.note}
            if not equal:
                print(f"{name}: parameter counts differ (ours {n_ours:,}, official {n_off:,}): not timed",
                      flush=True)
                entry["note"] = (row.note + "; " if row.note else "") + "not timed: parameter counts differ"
            else:
                try:
                    entry.update(time_row(row, args.iters, args.warmup, args.profile))
                except Exception as e:  # e.g. official code written for one input size only
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    print(f"{row.label}: not timed: {type(e).__name__}: {first}", flush=True)
                    entry["note"] = (row.note + "; " if row.note else "") + f"not timed: {type(e).__name__}: {first}"
                    report["rows"].append(entry)
                    continue
                print(f"{row.label}: inference {cell(entry['inference'])}; train {cell(entry.get('train'))}",
                      flush=True)
            report["rows"].append(entry)
        del pair
    report["load_average_after"] = load_average()
    return report


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", choices=PAIRS, default=list(PAIRS))
    ap.add_argument("--frdnet-repo", help="checkout of chchshshhh/FRD-Net")
    ap.add_argument("--brgen-repo", help="checkout of clpbc/BR-Gen (its model_zoo/nfa_vit is used)")
    ap.add_argument("--diffiml-repo", help="checkout of scu-zjz/DiffIML")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="timed rounds per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--infer-size", type=int, default=512)
    ap.add_argument("--train-size", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="after timing, profile one call of each side (torch.profiler, self-CPU time) and list the "
                         "K largest operators of each")
    ap.add_argument("--out", help="Markdown table to write (the JSON goes beside it, .json)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    args.argv = argv
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    check_folders(args)
    report = run(args)
    text = markdown(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2))
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
