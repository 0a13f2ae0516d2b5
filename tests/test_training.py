"""Training machinery: augmentation, EMA, metrics, resume after kill -9, and 2-process DDP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import assert_one_line_error, run_cli, run_main

from digitrec.augment import augment_batch, random_flag, random_ink, tta_views
from digitrec.errors import UsageError
from digitrec.metrics import expected_calibration_error, fit_temperature, nll, softmax, summarize
from digitrec.models import FlattenHWC, build_model
from digitrec.training import EMA


def _digit_batch(n=16):
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a vertical bar: a "1"
    return x


def test_augment_identity_and_shapes():
    x = _digit_batch()
    assert torch.equal(augment_batch(x, {}), x)
    out = augment_batch(x, dict(rotate=0, scale=0, shear=0, translate=0))
    assert torch.allclose(out, x, atol=1e-5)  # the zero transform is exact
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, dict(rotate=15, scale=0.1, shear=0.1, translate=0.1, elastic=0.5, stroke=0.5,
                                blur=0.5, noise=0.05), g)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[0], out[1])  # every image gets its own draw


def test_augment_is_reproducible_and_keeps_ink():
    x = _digit_batch()
    spec = dict(rotate=12, scale=0.12, shear=0.15, translate=0.12, elastic=0.5)
    a = augment_batch(x, spec, torch.Generator().manual_seed(1))
    b = augment_batch(x, spec, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    ink_before, ink_after = x.sum((1, 2, 3)), a.sum((1, 2, 3))
    assert ((ink_after / ink_before) > 0.6).all() and ((ink_after / ink_before) < 1.6).all()


def test_augment_translation_moves_centre_of_mass():
    x = _digit_batch(64)
    out = augment_batch(x, dict(translate=0.15), torch.Generator().manual_seed(0))
    cols = torch.arange(28.0)
    com = (out.sum(2).squeeze(1) * cols).sum(1) / out.sum((1, 2, 3))
    assert com.std() > 1.0  # shifted by up to ±4 px


def test_ink_redraws_a_pen_stroke_refitted_as_preprocess_does():
    # A small, off-centre stroke with a faint smudge beside it: the pen keeps the stroke (sharp edges),
    # drops the smudge, and the refit brings the stroke to MNIST's 20 px box centred at (14, 14).
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 3:15, 4:7] = 1.0
    x[:, :, 20:24, 20:24] = 0.2
    out = random_ink(x, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    img = out[0, 0]
    rows = torch.nonzero(img.sum(1) > 0.05).flatten()
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # the stroke's height fills the 20 px box
    ys, xs = torch.arange(28.0) + 0.5, torch.arange(28.0) + 0.5
    cy, cx = (img.sum(1) * ys).sum() / img.sum(), (img.sum(0) * xs).sum() / img.sum()
    assert abs(cy - 14.5) < 0.6 and abs(cx - 14.5) < 0.6
    assert img[22:, 22:].sum() == 0  # the smudge is gone (and nothing else is there)
    assert ((img > 0.05) & (img < 0.95)).sum() < 0.5 * (img >= 0.95).sum()  # mostly solid ink, few grey edges


def test_ink_leaves_the_rest_of_the_batch_and_blank_images():
    x = _digit_batch(10)
    x[0] = 0.0
    out = random_ink(x, torch.Generator().manual_seed(0), p=0.5)
    assert torch.equal(out[0], x[0])  # a blank image has no stroke to redraw
    assert torch.equal(out[5:], x[5:])  # only round(p * n) images (the first ones of a shuffled batch)
    assert not torch.equal(out[1:5], x[1:5])
    assert torch.equal(random_ink(x, None, p=0.0), x)


def test_flag_draws_a_flag_on_ones_only():
    # Bars labelled 1 get ink up and to the left of the bar's top (the flag goes down to the left from
    # there); other labels, blank images and p=0 are left alone; the same generator draws the same flags.
    x = _digit_batch(8)
    x[3] = 0.0
    labels = torch.tensor([1, 1, 1, 1, 7, 1, 4, 1])
    out = random_flag(x, labels, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out >= x).all()  # ink is only added
    for i in (0, 1, 2, 5, 7):
        added = out[i, 0] - x[i, 0]
        assert added[:, :12].sum() > 2.0  # left of the bar (columns 12-15)
        assert added[:5].sum() == 0  # nothing above the bar's top (row 6), but a pen's half width
        assert added[6:12, :12].sum() > 0.5 * added[:, :12].sum() or added[20:, :12].sum() > 0  # flag or foot
    for i in (3, 4, 6):
        assert torch.equal(out[i], x[i])
    again = random_flag(x, labels, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(out, again)
    assert torch.equal(random_flag(x, labels, torch.Generator().manual_seed(0), p=0.0), x)


def test_flag_needs_labels_and_leaves_other_recipes_unchanged():
    x = _digit_batch()
    with pytest.raises(UsageError, match="labels"):
        augment_batch(x, dict(flag=0.5))
    # A recipe without `flag` draws the same random numbers with or without labels: old commands reproduce.
    spec = dict(rotate=10, elastic=0.3, ink=0.5)
    labels = torch.ones(16, dtype=torch.long)
    assert torch.equal(augment_batch(x, spec, torch.Generator().manual_seed(3)),
                       augment_batch(x, spec, torch.Generator().manual_seed(3), labels))
    flagged = augment_batch(x, dict(flag=1.0), torch.Generator().manual_seed(3), labels)
    assert (flagged.sum((1, 2, 3)) > x.sum((1, 2, 3)) + 2).all()


def test_unknown_augmentation_rejected():
    with pytest.raises(UsageError, match="wobble"):
        augment_batch(_digit_batch(), dict(wobble=1))


def test_tta_views_keep_shape():
    views = tta_views(_digit_batch())
    assert len(views) == 5 and all(v.shape == (16, 1, 28, 28) for v in views)


def test_ema_tracks_weights():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    for step in range(200):
        ema.update(model, step)
    assert torch.allclose(ema.model.weight, model.weight, atol=1e-3)


def test_temperature_scaling_recovers_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 10)) * 3
    labels = np.array([rng.choice(10, p=p) for p in softmax(true_logits)])
    fitted = fit_temperature(true_logits * 2.5, labels)  # over-confident by 2.5x
    assert fitted == pytest.approx(2.5, rel=0.1)
    assert nll(true_logits * 2.5, labels, fitted) < nll(true_logits * 2.5, labels)


def test_temperature_without_validation_errors_stays_finite():
    """All right on validation: the NLL has no minimum, so T must not run to the search's bound."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, size=1000)
    logits = rng.normal(size=(1000, 10)) + 6 * np.eye(10)[labels]
    fitted = fit_temperature(logits, labels)
    assert 0.06 < fitted < 20
    assert softmax(logits, fitted).max(1).mean() == pytest.approx(1001 / 1002, abs=1e-6)
    labels[0] = (logits[0].argmax() + 1) % 10  # one error: the usual NLL fit, which the test above checks
    assert fit_temperature(logits, labels) != pytest.approx(fitted)


def test_summary_and_ece():
    logits = np.eye(10)[np.arange(100) % 10] * 10
    labels = np.arange(100) % 10
    s = summarize(logits, labels, 10)
    assert s["accuracy"] == 1.0 and s["n"] == 100 and np.trace(np.array(s["confusion"])) == 100
    assert all(row["f1"] == 1.0 for row in s["per_class"])
    assert expected_calibration_error(softmax(logits), labels) < 0.01


def _train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "mlp", "--epochs", "3", "--batch-size", "512", "--seed", "5", "--json",
            "--no-progress", "--out", str(out), *extra]


def test_flatten_hwc_is_a_view_for_channels_last_and_keeps_gradients_channels_last():
    x = torch.randn(4, 8, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = FlattenHWC()(x)
    assert y.data_ptr() == x.data_ptr()  # no copy
    assert torch.equal(y, x.permute(0, 2, 3, 1).reshape(4, -1))
    (y * torch.arange(y.shape[1])).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    # Same values whatever the input layout, so inference on plain NCHW batches is unchanged.
    assert torch.equal(FlattenHWC()(x.detach().contiguous()), y.detach())


def test_best_last_knob_widens_only_the_final_stage():
    default, wide = build_model("best"), build_model("best", last=128)
    assert default[-1].in_features == 64 and wide[-1].in_features == 128
    convs = [m.out_channels for m in wide.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 16, 16, 32, 32, 32, 128, 128]
    assert wide(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_fast_model_gives_same_logits_in_both_memory_formats():
    model = build_model("fast").eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        plain = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(plain, cl, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("epochs, steps, rows", [("0.05", 30, 1), ("1.5", 900, 2)])
def test_fractional_epochs_stop_the_last_epoch_early(tmp_path, epochs, steps, rows):
    proc = run_cli("train", "--model", "mlp", "--epochs", epochs, "--batch-size", "100", "--threads", "1",
                   "--json", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == steps
    card = json.loads(Path(result["checkpoint"]).read_text())
    assert card["steps"] == steps and len(card["history"]) == rows


def test_ctrl_c_in_the_first_epoch_leaves_no_empty_folder(tmp_path):
    """--out (and any parent it needed) appears with the first file written into it: an interrupted first
    epoch, with nothing to resume yet, leaves nothing behind."""
    out = tmp_path / "runs" / "first"
    cmd = [sys.executable, "-m", "digitrec", "train", "--model", "best", "--epochs", "2", "--threads", "1",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 120
    while b"epoch 1/2" not in seen and proc.poll() is None and time.monotonic() < deadline:
        seen += os.read(proc.stderr.fileno(), 4096)  # the progress bar, written with \r and no newline
    assert b"epoch 1/2" in seen, seen.decode(errors="replace")
    assert out.exists() is False
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert b"Traceback" not in seen + rest
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_after_an_epoch_says_how_to_resume_and_a_rerun_says_it_replaces(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", *_train_args(out, "--epochs", "50")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-2] == f"digitrec: note: {out / 'resume.pt'} keeps the finished epochs; the same command with " \
                        "--resume goes on", err
    assert "Traceback" not in err

    finished = run_main("train", "--model", "mlp", "--epochs", "0.05", "--json", "--no-progress", "--out", str(out))
    assert finished.returncode == 0 and "replaces" not in finished.stderr, finished.stderr
    again = run_main("train", "--model", "mlp", "--epochs", "0.05", "--json", "--no-progress", "--out", str(out))
    assert again.returncode == 0
    assert f"digitrec: note: {out} holds a finished model; this run replaces it when it ends" in again.stderr


def test_resume_after_kill_9_matches_uninterrupted_run(tmp_path):
    reference = run_cli(*_train_args(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    ref = json.loads(reference.stdout.strip().splitlines()[-1])

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "digitrec", *_train_args(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / "resume.pt").exists(), "no resume state was written after the first epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.json").exists()
    saved = (out / "resume.pt").read_bytes()
    # other options would not fit the weights, or would validate on images already trained on
    assert_one_line_error(run_main(*_train_args(out, "--resume", "--val", "500")), "--resume", "other options (val)",
                          code=2)
    assert_one_line_error(run_main(*_train_args(out, "--resume", "--epochs", "4")), "other options (epochs)", code=2)
    assert (out / "resume.pt").read_bytes() == saved and not (out / "model.json").exists()

    resumed = run_cli(*_train_args(out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    card = json.loads(Path(result["checkpoint"]).read_text())
    assert [row["epoch"] for row in card["history"]] == [1, 2, 3]
    # Model, optimiser, schedule and both RNG streams are restored: the result is the uninterrupted one.
    assert result["test_accuracy"] == ref["test_accuracy"]
    assert not (out / "resume.pt").exists()
    # finished: nothing to resume, and the model is not quietly trained again over
    finished = (out / "model.json").read_bytes()
    assert_one_line_error(run_main(*_train_args(out, "--resume")), "holds a finished model", code=2)
    assert (out / "model.json").read_bytes() == finished


def test_resume_from_an_unreadable_state_is_one_line(tmp_path):
    (tmp_path / "resume.pt").write_bytes(b"not a torch file")
    assert_one_line_error(run_main(*_train_args(tmp_path, "--resume")), f"{tmp_path / 'resume.pt'}", "cannot be read",
                          code=1)
    assert not (tmp_path / "model.json").exists()


def _kill_processes_mentioning(text: str) -> None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _torchrun_mlp(out: Path, timeout: float = 120) -> subprocess.CompletedProcess | None:
    """`torchrun --nproc-per-node 2 -m digitrec train --model mlp ...` (about 10 s on 2 cores); None (and a
    warning) when it does not end within `timeout`: then it is killed with its workers."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Own process group, so a hang kills torchrun's workers too, not just the launcher.
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "digitrec", "train", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--threads", "1",
         "--json", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        _kill_processes_mentioning(str(out))  # torch's launcher may start workers in their own sessions
        warnings.warn(f"torchrun hung for {timeout:.0f} s and was killed", stacklevel=2)
        return None
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)


def test_torchrun_two_processes_matches_single_process(tmp_path):
    single = run_cli("train", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--threads", "1",
                     "--json", "--no-progress", "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    one = json.loads(single.stdout.strip().splitlines()[-1])

    # The 2-process launch used to hang about 1 in 40 after the work was done: a deadlock in the gloo teardown
    # (see the end of training.train), now skipped. One retry in a fresh folder stays, in case of another
    # cause; two hangs in a row fail the test.
    ddp = _torchrun_mlp(tmp_path / "ddp") or _torchrun_mlp(tmp_path / "ddp-retry")
    assert ddp is not None, "torchrun hung twice"
    out = Path(ddp.args[ddp.args.index("--out") + 1])
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    results = [json.loads(line) for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1, ddp.stdout  # only rank 0 reports and writes
    two = results[0]
    assert two["world_size"] == 2
    assert abs(two["test_accuracy"] - one["test_accuracy"]) < 0.01
    files = sorted(p.name for p in out.iterdir())
    assert files == ["model.json", "model.safetensors"]
    evaluated = run_cli("evaluate", "--checkpoint", str(out), "--json")
    assert json.loads(evaluated.stdout)["accuracy"] == two["test_accuracy"]


def test_holdout_indices_random_and_tail():
    from digitrec.training import holdout_indices

    kept, held = holdout_indices(100, 10, seed=0)
    again = holdout_indices(100, 10, seed=0)
    np.testing.assert_array_equal(held, again[1])  # fixed for a seed
    assert not np.array_equal(np.sort(held), np.arange(90, 100))
    assert sorted([*kept, *held]) == list(range(100))
    kept, held = holdout_indices(100, 10, seed=3, mode="tail")
    np.testing.assert_array_equal(held, np.arange(90, 100))
    np.testing.assert_array_equal(kept, np.arange(90))
    with pytest.raises(UsageError, match="--val must be between"):
        holdout_indices(100, 100, seed=0)
    with pytest.raises(UsageError, match="--held-out-split must be one of"):
        holdout_indices(100, 10, seed=0, mode="middle", option="--held-out")


def test_train_val_split_tail_is_recorded(tmp_path):
    out = tmp_path / "tail"
    result = run_cli("train", "--model", "mlp", "--epochs", "0.2", "--val", "2000", "--val-split", "tail",
                     "--json", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model.json").read_text())
    assert card["val"] == 2000 and card["val_split"] == "tail"
    assert_one_line_error(run_main("train", "--val-split", "middle", "--out", str(tmp_path / "x")), "--val-split",
                          code=2)


def test_a_resumed_run_is_the_same_run_down_to_the_extra_digits_content(tmp_path):
    """The extra digits count by content: a file replaced under the same name between epochs is other data."""
    from digitrec.training import TrainConfig, _run_identity

    config = TrainConfig(model="mlp", extra_digits=str(tmp_path / "digits.npz"))
    assert _run_identity(config, {}, "aaa") != _run_identity(config, {}, "bbb")
    assert _run_identity(config, {}, "aaa") == _run_identity(config, {}, "aaa")


def test_an_ensemble_interrupted_in_a_later_member_resumes(tmp_path):
    out = tmp_path / "ens"
    args = ["train", "--model", "mlp", "--epochs", "1.95", "--batch-size", "512", "--ensemble", "2", "--no-progress",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "seed1" / "resume.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert (out / "seed0" / "model.json").exists() and (out / "seed1" / "resume.pt").exists()
    finished = (out / "seed0" / "model.json").read_bytes()
    resumed = run_cli(*args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "member seed 0 already finished" in resumed.stdout and "resumed from" in resumed.stdout
    assert (out / "seed0" / "model.json").read_bytes() == finished  # kept, not trained again
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["members"] == 2 and Path(result["checkpoint"]).exists()
