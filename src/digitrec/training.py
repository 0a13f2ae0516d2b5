"""The training loop: one function, `train(config)`, readable top to bottom.

The whole dataset sits on the training device as one uint8 tensor; each step indexes a batch, augments
it on the device and takes an optimiser step. Optional: EMA of weights, label smoothing, OneCycle,
validation each epoch, resumable state each epoch, and DDP when launched by torchrun.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._dynamo  # (torch.optim imports it on first use, ~1 s: load it with torch, not in the clock)
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from digitrec import checkpoint
from digitrec.atomic import atomic_open, writable_folder
from digitrec.augment import AUGMENTATIONS, augment_batch, check_ranges
from digitrec.data import Dataset, load_dataset
from digitrec.data.extra import load_extra_digits
from digitrec.errors import CheckpointError, DigitrecError, UsageError
from digitrec.inference import pick_device, predict_logits
from digitrec.metrics import fit_temperature, nll, summarize
from digitrec.models import build_model, check_arch, count_parameters, get_spec


@dataclass
class TrainConfig:
    model: str = "mlp"
    dataset: str = "mnist"
    seed: int = 0
    val: int = 0                      # hold out this many training images for validation
    val_split: str = "random"         # which: "random" or "tail" (the last `val`: other writers, see split_validation)
    device: str = "auto"
    out: str = "runs/{model}-{dataset}-s{seed}"
    data_dir: str | None = None
    offline: bool = False
    resume: bool = False
    threads: int | None = None
    tta: bool = False                 # evaluate with test-time augmentation
    tensorboard: str | None = None    # log scalars and sample images here (optional dependency)
    cuda_graphs: bool = True          # on a single CUDA GPU, replay each training step as one CUDA graph
    progress: bool = True
    command: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture knobs, e.g. width=48
    teacher: str | None = None        # distil from this checkpoint or bundled model name (e.g. "ensemble")
    extra_digits: str | None = None   # .npz of more labelled 28x28 digits (images, labels) to train on too
    # Recipe overrides; None means "the model's recipe value" (see models.MODELS).
    overrides: dict[str, Any] = field(default_factory=dict)


def resolve_recipe(config: TrainConfig) -> dict[str, Any]:
    recipe = copy.deepcopy(get_spec(config.model).recipe)
    check_arch(config.model, config.model_kwargs)
    for key, value in config.overrides.items():
        if value is None:
            continue
        if key not in recipe and key not in ("warmup", "bf16", "momentum", "distill", "distill_temperature"):
            raise UsageError(f"unknown hyper-parameter {key!r} for model {config.model!r}")
        recipe[key] = value
    unknown = set(recipe.get("augment") or {}) - set(AUGMENTATIONS)
    if unknown:
        raise UsageError(f"unknown augmentation(s): {', '.join(sorted(unknown))}; "
                         f"choose from: {', '.join(AUGMENTATIONS)}")
    check_ranges(recipe.get("augment") or {})
    if config.extra_digits and config.dataset != "mnist":  # its labels are digits, not this dataset's classes
        raise UsageError(f"--extra-digits: handwritten digits are extra data for mnist, not {config.dataset}")
    digits = config.dataset == "mnist"
    for name, wrong in (("hflip", digits), ("flag", not digits)):
        if wrong and float((recipe.get("augment") or {}).get(name, 0)) > 0:
            raise UsageError(f"--augment {name}: " + ("a mirrored digit is another digit (or none); hflip is for "
                                                      "fashion-mnist" if digits else
                                                      f"draws the flag of a handwritten 1; not for {config.dataset}"))
    if int(recipe["batch_size"]) < 1:
        raise UsageError(f"--batch-size must be at least 1, got {recipe['batch_size']}")
    if not float(recipe["epochs"]) > 0:
        raise UsageError(f"--epochs must be positive, got {recipe['epochs']}")
    if not float(recipe["lr"]) > 0:
        raise UsageError(f"--lr must be positive, got {recipe['lr']}")
    if not config.teacher and ("distill" in recipe or "distill_temperature" in recipe):
        raise UsageError("--distill and --distill-temperature need --teacher")
    if config.teacher:
        # Hinton et al. 2015: loss = (1 - a) x the usual loss + a x tau^2 x KL(teacher || student), both
        # softened by tau, so the student also learns which wrong digits the teacher finds close.
        recipe.setdefault("distill", 0.5)
        recipe.setdefault("distill_temperature", 4.0)
        if not 0 < float(recipe["distill"]) <= 1 or not float(recipe["distill_temperature"]) > 0:
            raise UsageError("--distill must be in (0, 1] and --distill-temperature positive, got "
                             f"{recipe['distill']} and {recipe['distill_temperature']}")
    return recipe


def load_teacher(name: str, dataset: str, classes: int) -> checkpoint.Checkpoint:
    """The distillation teacher: a checkpoint path, or a bundled model's name ('ensemble', 'best')."""
    try:
        teacher = checkpoint.load(name) if Path(name).exists() else checkpoint.bundled(name)
    except DigitrecError as err:  # a missing or corrupt card, or one that is not a digit model
        raise UsageError(f"--teacher {name}: {err}") from None
    card_classes = teacher.card.get("classes")
    if teacher.card.get("dataset", dataset) != dataset or (card_classes and len(card_classes) != classes):
        raise UsageError(f"--teacher {name}: it was trained on {teacher.card.get('dataset')!r}, not {dataset!r}")
    return teacher


def make_optimizer(model: nn.Module, recipe: dict[str, Any], device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    # Fused kernels: one call updates every parameter (halves the seed MLP's step time on a CPU).
    fused: dict[str, Any] = dict(fused=True) if device.type in ("cpu", "cuda") else {}
    lr: float | torch.Tensor = float(recipe["lr"])
    wd = float(recipe.get("weight_decay", 0.0))
    name = recipe["optimizer"]
    if capturable:  # inside a CUDA graph the step count and the (scheduled) lr must live on the device
        fused["capturable"] = True
        lr = torch.tensor(lr, device=device)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr, betas=tuple(recipe["betas"]), weight_decay=wd, **fused)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr, betas=tuple(recipe["betas"]), weight_decay=wd, **fused)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr, momentum=float(recipe.get("momentum", 0.9)),
                               nesterov=True, weight_decay=wd)
    raise UsageError(f"unknown optimizer {name!r}; choose from: adam, adamw, sgd")


def make_schedule(optimizer: torch.optim.Optimizer, recipe: dict[str, Any], total_steps: int):
    kind = recipe.get("schedule", "constant")
    if kind == "constant":
        return None
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=float(recipe["lr"]), total_steps=total_steps,
            pct_start=float(recipe.get("warmup", 0.25)), anneal_strategy="linear",
            cycle_momentum=False, div_factor=10.0, final_div_factor=100.0)
    if kind == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total_steps)
    raise UsageError(f"unknown schedule {kind!r}; choose from: constant, onecycle, linear")


class EMA:
    """Exponential moving average of weights (BatchNorm buffers copied): a free accuracy gain."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = [p for p in self.model.parameters()]
        self.buffers = [b for b in self.model.buffers()]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up: early in training the average would be dominated by random initial weights.
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.params, list(model.parameters()), 1 - d)
        if self.buffers:  # BatchNorm statistics: one launch for all, not one per buffer
            torch._foreach_copy_(self.buffers, list(model.buffers()))


class CudaGraphStep:
    """Runs a training step by replaying one captured CUDA graph.

    Why: at MNIST's batch sizes a GPU step is a few hundred tiny kernels, and Python and launch overhead
    (about 8 ms a step on an H100) dwarf the arithmetic. The whole step (batch gather, augmentation,
    forward, backward, optimiser) is captured once and replayed with a new batch index each time. The first
    `warmup` steps run eagerly on a side stream, as capture requires (cuDNN autotuning, allocator warm-up).
    """

    def __init__(self, step, batch: int, device: torch.device, generators: list[torch.Generator],
                 warmup: int = 3):
        self.step, self.warmup, self.generators = step, warmup, generators
        self.idx = torch.zeros(batch, dtype=torch.long, device=device)
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0

    def __call__(self, idx: torch.Tensor) -> None:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                self.step(idx)
            torch.cuda.current_stream().wait_stream(self.stream)
            return
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            for generator in self.generators:  # their offsets advance on every replay
                self.graph.register_generator_state(generator)
            with torch.cuda.graph(self.graph):
                self.step(self.idx)
        self.idx.copy_(idx)
        self.graph.replay()


VAL_SPLITS = ("random", "tail")


def holdout_indices(n_images: int, n_val: int, seed: int, mode: str = "random", option: str = "--val",
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices of a training set of `n_images`. "random": a fixed random draw (seeded
    separately from training). "tail": the last `n_val` images. Why tail: MNIST stores each writer's digits
    together (in two interleaved streams; a digit's ink weight correlates 0.28 with the digit two places on and
    0.05 with one 5,000 places on; its nearest same-class neighbour lies within 100 places 4.9 % of the time
    against 0.3 % by chance), so a random hold-out shares its writers with training and a tail block mostly
    does not: it is the nearest thing to new writers that the training set holds."""
    if mode not in VAL_SPLITS:
        raise UsageError(f"{option}-split must be one of {', '.join(VAL_SPLITS)}, got {mode!r}")
    if not 0 <= n_val < n_images:
        raise UsageError(f"{option} must be between 0 and {n_images - 1}, got {n_val}")
    if mode == "tail":
        return np.arange(n_images - n_val), np.arange(n_images - n_val, n_images)
    order = np.random.default_rng(10_000 + seed).permutation(n_images)
    return order[n_val:], order[:n_val]


def split_validation(data: Dataset, n_val: int, seed: int, mode: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """The train/validation index split of `data` (see `holdout_indices`)."""
    return holdout_indices(len(data), n_val, seed, mode)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays off on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX); elsewhere it is emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return False


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: torch.device) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _log(msg: str, rank: int) -> None:
    if rank == 0:
        print(msg, flush=True)


def out_folder(config: TrainConfig) -> Path:
    """The run's folder: `--out` with {model}, {dataset} and {seed} filled in."""
    return Path(config.out.format(model=config.model, dataset=config.dataset, seed=config.seed))


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate on the test set, save a checkpoint; return the result record."""
    recipe = resolve_recipe(config)
    device = pick_device(config.device)  # a device that is not there is a UsageError
    setup_distributed(device)
    rank, world = _dist_info()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if config.threads:
        torch.set_num_threads(config.threads)

    # --- data: the whole split on the device as uint8 (47 MB for MNIST) --------------------------
    train_data = load_dataset(config.dataset, "train", config.data_dir, config.offline, config.progress)
    test_data = load_dataset(config.dataset, "test", config.data_dir, config.offline, config.progress)
    # checked before the work (and after the data, so a missing dataset leaves no empty folder behind)
    out = str(out_folder(config))
    out_stem = writable_folder(out) / "model"
    if config.resume and not (out_stem.parent / "resume.pt").exists() and out_stem.with_suffix(".json").exists():
        # a finished run keeps no resume.pt: retraining here would replace its model without a word
        raise UsageError(f"--resume: {out} holds a finished model and nothing to resume; drop --resume to "
                         "train it again, or give another --out")
    train_idx, val_idx = split_validation(train_data, config.val, config.seed, config.val_split)
    x_all = torch.from_numpy(train_data.images).unsqueeze(1).to(device)
    y_all = torch.from_numpy(train_data.labels).to(device)
    x_train, y_train = x_all[torch.from_numpy(train_idx).to(device)], y_all[torch.from_numpy(train_idx).to(device)]
    n_train = len(y_train)
    classes = len(train_data.classes)
    teacher = load_teacher(config.teacher, config.dataset, classes) if config.teacher else None
    teacher_info = _teacher_record(config.teacher, teacher) if teacher is not None else None
    extra_info = None
    if config.extra_digits:
        # Appended to the training images only: validation, temperature and test stay the dataset's own.
        extra_images, extra_labels, extra_sha = load_extra_digits(config.extra_digits, classes)
        x_train = torch.cat([x_train, torch.from_numpy(extra_images).unsqueeze(1).to(device)])
        y_train = torch.cat([y_train, torch.from_numpy(extra_labels).to(device)])
        n_train = len(y_train)
        extra_info = dict(path=str(config.extra_digits), sha256=extra_sha, n=len(extra_labels))

    # --- model and optimiser (the clock starts here: IDX reading excluded) -----------------------
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config.model, classes=classes, **config.model_kwargs).to(device)
    # channels_last: oneDNN/cuDNN convolutions run 20-40 % faster in NHWC (measured on the 2-core CPU).
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # CUDA graphs need a capturable optimiser and one process; Adam(W) has the capturable fused kernel.
    # (Graph-safe custom generators, for the augmentation's RNG, arrived in torch 2.5; older torch runs eagerly.)
    graphed = (config.cuda_graphs and device.type == "cuda" and world == 1
               and recipe["optimizer"] in ("adam", "adamw")
               and hasattr(torch.cuda.CUDAGraph, "register_generator_state"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    optimizer = make_optimizer(model, recipe, device, capturable=graphed)
    batch = int(recipe["batch_size"])
    # drop_last: a ragged final batch has a new shape, and oneDNN JIT-compiles fresh kernels for it
    # (measurable in a 3-second run); the dropped images come back in other epochs' random orders.
    steps_per_epoch = max(n_train // batch, 1)
    # Fractional epochs (e.g. 0.8) end the last epoch early: the schedule spans exactly the steps taken.
    total_steps = max(1, round(float(recipe["epochs"]) * steps_per_epoch))
    epochs = math.ceil(total_steps / steps_per_epoch)
    schedule = make_schedule(optimizer, recipe, total_steps)
    ema = EMA(model, float(recipe["ema"])) if recipe.get("ema") else None
    teacher_log_probs = None
    if teacher is not None:
        # The teacher sees each training image once, un-augmented, before training (inside the clock): its
        # soft labels for an image serve every augmented view of it, as the label does. The student's
        # validation images are not among them, so validation stays unseen.
        teacher_logits = predict_logits(teacher.model.to(device), train_data.images[train_idx], device=device)
        teacher_log_probs = (torch.from_numpy(teacher_logits).float().to(device) / teacher.temperature).log_softmax(1)
        if extra_info is not None:
            # The extra digits' soft labels are their own labels, smoothed as the hard loss smooths them, not
            # the teacher's reading: they are there to teach what the teacher gets wrong (a flagged 1 is no 7).
            eps = max(float(recipe.get("label_smoothing", 0.0)), 0.01)
            own = torch.full((n_train - len(teacher_log_probs), classes), eps / classes, device=device)
            own[torch.arange(len(own), device=device), y_train[len(teacher_log_probs):]] += 1 - eps
            teacher_log_probs = torch.cat([teacher_log_probs, own.log()])
        del teacher, teacher_logits
    distill = float(recipe.get("distill", 0.0))
    tau = float(recipe.get("distill_temperature", 1.0))
    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model)
    gen = torch.Generator(device=device).manual_seed(config.seed)           # batch order: same on all ranks
    aug_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + rank + 1)  # per-rank draws
    history: list[dict[str, float]] = []
    start_epoch, elapsed_before, step = 0, 0.0, 0
    resume_path = out_stem.parent / "resume.pt"
    run = _run_identity(config, recipe, extra_info["sha256"] if extra_info else "")
    if config.resume and resume_path.exists():
        state = _load_resume(resume_path, device, run)
        try:  # a state from before runs were recorded in it can still belong to another model
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if schedule is not None:
                schedule.load_state_dict(state["schedule"])
            if ema is not None:
                ema.model.load_state_dict(state["ema"])
            gen.set_state(state["gen"].cpu())
            aug_gen.set_state(state["aug_gen"].cpu())
            start_epoch, step = int(state["epoch"]), int(state["step"])
            elapsed_before = float(state["elapsed"])
            history = [dict(zip(state["history_keys"], row.tolist(), strict=True)) for row in state["history"]]
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"--resume: {resume_path} does not fit this run ({type(exc).__name__}); give the "
                             "options it was started with, or another --out") from None
        _log(f"resumed from {resume_path} after epoch {start_epoch}", rank)
    elif config.resume and rank == 0:  # a mistyped --out would otherwise restart a long run without a word
        print(f"digitrec: note: nothing to resume in {out_stem.parent} (no resume.pt); starting from epoch 1",
              file=sys.stderr, flush=True)
    elif rank == 0 and out_stem.with_suffix(".json").exists():
        print(f"digitrec: note: {out_stem.parent} holds a finished model; this run replaces it when it ends",
              file=sys.stderr, flush=True)
    smoothing = float(recipe.get("label_smoothing", 0.0))
    use_bf16 = bool(recipe.get("bf16", False)) and bf16_is_fast(device)
    augment = recipe.get("augment") or {}

    logger = None
    if config.tensorboard and rank == 0:
        from digitrec.tb import TensorboardLogger

        logger = TensorboardLogger(config.tensorboard)
        logger.log_images("train/samples", train_data.images[train_idx[:32]], step=0)

    # Running sums stay on the device (no per-step sync) and keep their addresses (a CUDA graph writes them).
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)

    def train_step(idx: torch.Tensor) -> None:
        """One optimiser step on the images at `idx` (uint8 on the device -> augmented floats)."""
        x = x_train[idx].float().div_(255)
        y = y_train[idx]
        if augment:
            x = augment_batch(x, augment, aug_gen, y)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # bf16 autocast: 2x faster convolutions on CPUs with AVX512-BF16 and on GPUs; weights stay fp32.
        # (Its cast cache must be off under CUDA graph capture.)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=not graphed):
            logits = train_model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        if teacher_log_probs is not None:
            soft = F.kl_div((logits.float() / tau).log_softmax(1), (teacher_log_probs[idx] / tau).log_softmax(1),
                            reduction="batchmean", log_target=True)
            loss = (1 - distill) * loss + distill * tau * tau * soft
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach() * len(y))
        correct.add_((logits.argmax(1) == y).sum())

    run_step = CudaGraphStep(train_step, batch, device, [aug_gen]) if graphed else train_step

    for epoch in range(start_epoch, epochs):
        train_model.train()
        perm = torch.randperm(n_train, device=device, generator=gen)
        loss_sum.zero_()
        correct.zero_()
        seen = 0
        epoch_steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        bar = tqdm(range(epoch_steps), desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                   disable=not config.progress or rank != 0, leave=False, mininterval=0.5,
                   dynamic_ncols=True)
        for i in bar:
            idx = perm[i * batch:(i + 1) * batch]
            if world > 1:
                idx = idx[rank::world]
            run_step(idx)
            if schedule is not None:
                schedule.step()
            step += 1
            if ema is not None:
                ema.update(model, step)
            seen += len(idx)
            if i % 100 == 99:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
        bar.close()
        row = dict(epoch=epoch + 1, train_loss=loss_sum.item() / seen, train_accuracy=correct.item() / seen,
                   seconds=elapsed_before + time.perf_counter() - t0)
        eval_model = ema.model if ema is not None else model
        if len(val_idx) and rank == 0:
            val_logits = predict_logits(eval_model, train_data.images[val_idx], device=device)
            val_labels = train_data.labels[val_idx]
            row.update(val_loss=nll(val_logits, val_labels),
                       val_accuracy=float((val_logits.argmax(1) == val_labels).mean()))
        history.append(row)
        msg = f"epoch {epoch + 1}/{epochs}  loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.4f}"
        if "val_accuracy" in row:
            msg += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}"
        _log(msg + f"  [{row['seconds']:.1f}s]", rank)
        if logger is not None:
            logger.log_epoch(row, step=epoch + 1)
        if rank == 0 and epoch + 1 < epochs:
            _save_resume(resume_path, model, optimizer, schedule, ema, gen, aug_gen, epoch + 1, step,
                         elapsed_before + time.perf_counter() - t0, history, run)

    if logger is not None:
        logger.close()
    final = ema.model if ema is not None else model
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = elapsed_before + time.perf_counter() - t0

    result: dict[str, Any] = {}
    if rank == 0:
        temperature = 1.0
        if len(val_idx):
            val_logits = predict_logits(final, train_data.images[val_idx], device=device, tta=config.tta)
            temperature = fit_temperature(val_logits, train_data.labels[val_idx])
        test_logits = predict_logits(final, test_data.images, device=device, tta=config.tta)
        metrics = summarize(test_logits, test_data.labels, classes)
        card = dict(
            model=config.model, hparams=dict(config.model_kwargs), recipe=recipe, dataset=config.dataset,
            data_sha256={**train_data.sha256, **test_data.sha256}, classes=list(train_data.classes),
            seed=config.seed, val=config.val, val_split=config.val_split, tta=config.tta, temperature=temperature,
            parameters=count_parameters(model), steps=step, train_seconds=train_seconds, device=str(device),
            world_size=world, threads=torch.get_num_threads(), command=config.command,
            metrics=dict(test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
                         per_class=metrics["per_class"]),
            history=history, config={k: v for k, v in asdict(config).items() if k != "overrides"},
            **(dict(teacher=teacher_info) if teacher_info else {}),
            **(dict(extra_digits=extra_info) if extra_info else {}),
        )
        card_path = checkpoint.save(out_stem, final, card)
        resume_path.unlink(missing_ok=True)
        result = dict(model=config.model, dataset=config.dataset, epochs=recipe["epochs"], steps=step,
                      seed=config.seed, test_accuracy=metrics["accuracy"], test_loss=metrics["loss"],
                      train_seconds=round(train_seconds, 3), checkpoint=str(card_path),
                      val_accuracy=history[-1].get("val_accuracy"), device=str(device), world_size=world,
                      parameters=card["parameters"])
    if world > 1:
        dist.barrier()
        # Keep the DDP wrapper (its Reducer holds the gloo group) alive, and do not destroy the group: freeing
        # them joins gloo's worker threads while holding the GIL, and a worker still finishing the barrier
        # needs the GIL to drop a Python object. That deadlock hung about 1 launch in 40 (py-spy: main thread
        # in ~ProcessGroupGloo -> std::thread::join, worker in ~AsyncWork waiting for the GIL). The process
        # leaves through `end_distributed` instead, which skips the teardown.
        _LIVE_DDP.append(train_model)
    return result


def _teacher_record(name: str, teacher: checkpoint.Checkpoint) -> dict[str, Any]:
    """What a distilled card says about its teacher, so the chain of training runs stays traceable."""
    card = teacher.card
    return dict(name=name, card=str(teacher.path), command=card.get("command"),
                test_accuracy=card.get("metrics", {}).get("test_accuracy"),
                member_seeds=card.get("member_seeds"), seed=card.get("seed"))


_LIVE_DDP: list[nn.Module] = []  # DDP wrappers kept alive until the process ends (see the end of `train`)


def end_distributed(code: int = 0) -> None:
    """Under torchrun, after the last output: leave at once, without tearing down the gloo group (see the
    end of `train`); the checkpoint is already written. Outside a distributed run: nothing."""
    if _LIVE_DDP or (dist.is_available() and dist.is_initialized()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run_identity(config: TrainConfig, recipe: dict[str, Any], extra_sha256: str = "") -> str:
    """What makes a run this run (model, data, split, recipe), as JSON: a resumed run must match it, or its
    weights would not fit, or images it trained on would turn up in validation. The extra digits count by
    their content, not their file name: a file replaced between the epochs would change the data."""
    return json.dumps(dict(model=config.model, arch=config.model_kwargs, dataset=config.dataset, seed=config.seed,
                           val=config.val, val_split=config.val_split, teacher=config.teacher,
                           extra_digits=str(config.extra_digits or ""), extra_digits_sha256=extra_sha256,
                           recipe=recipe), sort_keys=True, default=str)


def _load_resume(path: Path, device: torch.device, run: str) -> dict[str, Any]:
    """The state `_save_resume` wrote, checked against this run; a CheckpointError or UsageError, one line."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001  torch.load raises EOFError, KeyError, RuntimeError, UnpicklingError...
        raise CheckpointError(f"--resume: {path} cannot be read ({type(exc).__name__}); delete it to start "
                              "afresh") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"--resume: {path} is not a digitrec training state; delete it to start afresh")
    saved = json.loads(state.get("run", "null") or "null")
    now = json.loads(run)
    if saved is not None:
        saved.setdefault("extra_digits_sha256", now["extra_digits_sha256"])  # states from before it was recorded
    if saved is not None and saved != now:
        changed = sorted(k for k in now if k != "recipe" and saved.get(k) != now.get(k))
        changed += sorted(k for k in now["recipe"] if (saved.get("recipe") or {}).get(k) != now["recipe"][k])
        raise UsageError(f"--resume: {path} is from a run with other options ({', '.join(changed)}); give the "
                         "same options, or another --out")
    return state


def _save_resume(path: Path, model, optimizer, schedule, ema, gen, aug_gen, epoch, step, elapsed,
                 history, run: str) -> None:
    """Everything needed to continue after a kill -9, written atomically once per epoch."""
    keys = sorted({k for row in history for k in row})
    state = dict(run=run, model=model.state_dict(), optimizer=optimizer.state_dict(),
                 schedule=schedule.state_dict() if schedule is not None else {},
                 ema=ema.model.state_dict() if ema is not None else {},
                 gen=gen.get_state(), aug_gen=aug_gen.get_state(), epoch=epoch, step=step, elapsed=elapsed,
                 history_keys=keys,
                 history=torch.tensor([[row.get(k, float("nan")) for k in keys] for row in history]))
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
