"""The weights shipped inside the package: present, small, documented, and scoring what their cards say."""

from __future__ import annotations

import json

import pytest
from clirun import run_cli

from digitrec import checkpoint


def test_bundled_weights_are_small_and_documented():
    folder = checkpoint.bundled_dir()
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert 0 < total <= 10 * 1024 * 1024
    for card_path in folder.glob("*.json"):
        card = checkpoint.read_card(card_path)
        assert card.get("command"), card_path
        if card.get("model") == "crnn-reader":  # the row reader: trained and validated on training digits only
            assert card["data_sha256"]["train-images-idx3-ubyte.gz"].startswith("440fcabf"), card_path
            assert "t10k-images-idx3-ubyte.gz" not in card["data_sha256"]
            assert 0.8 < card["metrics"]["val_string_accuracy"] <= 1.0 and "seed" in card
            assert card["bundled"] is False  # not a digit model: `--model reader` is no choice
            continue
        assert card["data_sha256"]["t10k-images-idx3-ubyte.gz"].startswith("8d422c7b"), card_path
        assert 0.99 < card["metrics"]["test_accuracy"] <= 1.0
        assert "seed" in card or "member_seeds" in card


@pytest.mark.parametrize("name, floor", [("best", 0.9965), ("distilled", 0.996), ("ensemble", 0.9965)])
def test_bundled_model_scores_what_its_card_says(name, floor):
    proc = run_cli("evaluate", "--json", *(["--model", name] if name != "best" else []), timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    card = checkpoint.read_card(checkpoint.bundled_dir() / f"{name}.json")
    assert result["accuracy"] == card["metrics"]["test_accuracy"]
    assert result["loss"] == pytest.approx(card["metrics"]["test_loss"], rel=1e-3)
    assert result["accuracy"] >= floor


def test_report_on_bundled_model_matches_its_evaluation(tmp_path):
    import io
    import re

    from PIL import Image

    proc = run_cli("report", "--out", str(tmp_path / "r"), "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "r" / "index.html").read_text()
    for section in ("summary", "data", "training", "confusion", "per-class", "mistakes", "calibration",
                    "features", "model-card"):
        assert f'<section id="{section}"' in html
    import base64

    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 8
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    card = checkpoint.default_bundled().card  # the report's default, as the Recognizer's
    assert metrics["accuracy"] == card["metrics"]["test_accuracy"]  # card == `evaluate --json`, tested above
    assert metrics["loss"] == pytest.approx(card["metrics"]["test_loss"], rel=1e-3)
