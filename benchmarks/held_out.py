"""The held-out training digits a validation figure may use: only those no model in the measurement trained on.

Each digit model holds out its own `--val N` draw (seeded by its `--seed`), and the row reader holds out the
split its card records (by default the bundled `best`'s seed-0 draw). The default `distilled` is seed 3 and
the ensemble members are seeds 1-7, so they trained on about 980 of the reader's 1,000 held-out digits: a
pool built from the reader's split alone flattered them (session 34's review). So single digits come from
the digit model's own held-out split, and rows (digit model and reader together) from the digits both held
out; a pool too small to mean anything is refused, with what to use instead.
"""

from __future__ import annotations

import numpy as np

from digitrec import checkpoint
from digitrec.errors import UsageError
from digitrec.reader_training import card_split
from digitrec.training import holdout_indices

MIN_POOL = 200  # fewer distinct digits than this, and rows repeat the same few digits: no figure


def digit_model_held_out(loaded: checkpoint.Checkpoint, n_images: int) -> np.ndarray:
    """Training-set indices the digit model never trained on (for an ensemble: that none of its members did)."""
    if "members" in loaded.card:
        cards = [checkpoint.read_card(loaded.path.parent / f"{m}.json") for m in loaded.card["members"]]
    else:
        cards = [loaded.card]
    held: np.ndarray | None = None
    for card in cards:
        n_val = int(card.get("val") or 0)
        if n_val == 0 or card.get("seed") is None:
            return np.array([], dtype=np.intp)
        mine = holdout_indices(n_images, n_val, int(card["seed"]), str(card.get("val_split") or "random"))[1]
        held = np.sort(mine) if held is None else np.intersect1d(held, mine)
    return held if held is not None else np.array([], dtype=np.intp)


def held_out_pool(loaded: checkpoint.Checkpoint, n_images: int, reader_card: dict | None = None,
                  ) -> tuple[np.ndarray, str]:
    """(indices, description) of the training digits unseen by the digit model and, when `reader_card` is
    given (rows), by the reader too. UsageError when fewer than `MIN_POOL` are left."""
    held = digit_model_held_out(loaded, n_images)
    who, what = "the digit model", f"held out by the digit model ({checkpoint.model_name(loaded)}: {len(held)})"
    if reader_card is not None:
        reader_held = card_split(reader_card, n_images)[1]
        held = np.intersect1d(held, reader_held)
        who = "both the digit model and the reader"
        what = f"held out by {who} ({len(held)} of the reader's {len(reader_held)})"
    if len(held) < MIN_POOL:
        raise UsageError(f"only {len(held)} training digits are held out by {who}, under the {MIN_POOL} a pool "
                         "needs (the models trained on the others): use a digit model whose --val split is the "
                         "reader's (the bundled best), or other digits (--pool uci, the test digits)")
    return held, what
