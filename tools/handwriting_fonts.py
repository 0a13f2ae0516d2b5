"""Digits drawn in handwriting fonts: fonts digitised from some 75 people's hands, none of them MNIST's
writers. Fetches the fonts, splits them into training and held-out hands, and draws their digits.

    python tools/handwriting_fonts.py fetch [--fonts DIR]
    python tools/handwriting_fonts.py digits OUT.npz [--per-glyph 24] [--seed 0]   # training hands only

`fetch` gathers the npm registry's Fontsource packages (`npm pack`, no other network) into DIR (default:
$DIGITREC_FONTS, else the user cache folder's `fonts/`), one `.woff` per font (its Latin, regular face),
written atomically; fonts already there are kept. Debian's handwriting fonts join when installed
(`apt-get install fonts-dkg-handwriting fonts-breip fonts-humor-sans fonts-kristi fonts-rufscript
fonts-sjfonts fonts-bwht fonts-kiloji fonts-seto`).

Every third font (`held_out`) is kept out of training: `benchmarks/handwriting_fonts.py` reports those
hands apart, so a model trained on `digits`' output is judged on writers it never saw.
`digits` writes the training hands' digits, MNIST-like (28x28 uint8, ink bright, normalised as
`digitrec predict` normalises a photo), for `digitrec train --extra-digits OUT.npz`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import platformdirs
import scipy.ndimage as ndi
from PIL import Image, ImageDraw, ImageFont

from digitrec.atomic import atomic_open, writable_file
from digitrec.errors import DigitrecError
from digitrec.preprocess import to_mnist_many

# Fontsource package names (@fontsource/NAME): Google Fonts' handwriting category, each drawn from one
# person's hand (school scripts of four Australian states among them). Picked by eye for readable digits.
NPM_FONTS = (
    "annie-use-your-telescope architects-daughter caveat caveat-brush cedarville-cursive chilanka "
    "coming-soon covered-by-your-grace crafty-girls dawning-of-a-new-day delius edu-nsw-act-foundation "
    "edu-qld-beginner edu-sa-beginner edu-tas-beginner edu-vic-wa-nt-beginner fuzzy-bubbles gaegu "
    "give-you-glory gloria-hallelujah gochi-hand handlee homemade-apple indie-flower itim just-another-hand "
    "just-me-again-down-here kalam klee-one la-belle-aurore loved-by-the-king mali mansalva mynerve "
    "nanum-brush-script nanum-pen-script neucha nothing-you-could-do oooh-baby over-the-rainbow pangolin "
    "patrick-hand permanent-marker playpen-sans rancho reenie-beanie rock-salt schoolbell sedgwick-ave "
    "shadows-into-light shadows-into-light-two short-stack square-peg sriracha sue-ellen-francisco "
    "swanky-and-moo-moo the-girl-next-door unkempt waiting-for-the-sunrise walter-turncoat zeyada"
).split()

# Debian's handwriting fonts, one regular face per hand (paths as the packages install them).
DEBIAN_FONTS = (
    "truetype/breip/Breip.ttf", "truetype/fifthhorseman/dkg.ttf", "truetype/humor-sans/Humor-Sans.ttf",
    "truetype/kiloji/kiloji.ttf", "truetype/kristi/Kristi.ttf", "truetype/rufscript/Rufscript010.ttf",
    "truetype/seto/setofont.ttf", "truetype/sjfonts/Delphine.ttf", "truetype/sjfonts/SteveHand.ttf",
    "opentype/bwht/BecauseWeBuild-Regular.otf", "opentype/bwht/BecauseWeConnect-Regular.otf",
    "opentype/bwht/BecauseWeCreate-Regular.otf", "opentype/bwht/BecauseWeLearn-Regular.otf",
    "opentype/bwht/BecauseWeMentor-Regular.otf", "opentype/bwht/BecauseWeOrganize-Regular.otf",
)
SYSTEM_FONTS = Path("/usr/share/fonts")


def default_dir() -> Path:
    return Path(os.environ.get("DIGITREC_FONTS") or Path(platformdirs.user_cache_dir("digitrec")) / "fonts")


def font_files(folder: str | os.PathLike | None = None, system: bool = True) -> list[Path]:
    """The fonts there are, in a fixed order: the fetched npm fonts (in NPM_FONTS' order), then (with
    `system`) the installed Debian ones."""
    folder = Path(folder) if folder else default_dir()
    npm = [folder / f"{name}.woff" for name in NPM_FONTS if (folder / f"{name}.woff").is_file()]
    return npm + ([SYSTEM_FONTS / rel for rel in DEBIAN_FONTS if (SYSTEM_FONTS / rel).is_file()] if system else [])


def fetch_one(name: str, out: Path) -> str:
    """`npm pack @fontsource/NAME` into a temporary folder and keep its Latin regular face as NAME.woff."""
    target = out / f"{name}.woff"
    if target.is_file():
        return "kept"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["npm", "pack", "--silent", f"@fontsource/{name}"], cwd=tmp,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return f"npm failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        packed = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(packed) as tar:
            faces = sorted(m for m in tar.getnames() if m.endswith("-normal.woff") and "-latin-" in m
                           and "-latin-ext-" not in m)
            regular = [m for m in faces if "-latin-400-normal" in m] or faces
            if not regular:
                return "no Latin face in the package"
            data = tar.extractfile(regular[0]).read()  # type: ignore[union-attr]
        partial = target.with_suffix(".woff.part")
        partial.write_bytes(data)
        partial.replace(target)
    return "fetched"


def held_out(fonts: list[Path]) -> np.ndarray:
    """Which fonts are kept out of training: every third one of the full list (NPM_FONTS, then DEBIAN_FONTS),
    by its place in that list, not among the fonts present, so a font that failed to fetch moves no other
    across the split: every model trained with `digits`' output is judged on the same unseen hands. A font
    outside the list (a stand-in) is placed by a hash of its file name."""
    place = {name: k for k, name in enumerate([*(f"{n}.woff" for n in NPM_FONTS), *DEBIAN_FONTS])}
    keys = [str(f.relative_to(SYSTEM_FONTS)) if f.is_relative_to(SYSTEM_FONTS) else f.name for f in fonts]
    return np.array([(place[k] if k in place else zlib.crc32(k.encode())) % 3 == 2 for k in keys], dtype=bool)


GLYPH = 96  # rendering size in px before the writer's variations; preprocessing rescales anyway


def font_digit(font: ImageFont.FreeTypeFont, digit: int, rng: np.random.Generator) -> np.ndarray:
    """One `digit` in `font`, dark ink (0) on white paper (255), uint8, with one draw of a writer's
    variation: slant and rotation (up to 8 degrees each), 0.8-1.2x width, a stroke up to 2 px heavier or
    1 px lighter, and a smooth elastic wobble of about 1.5 % of the glyph."""
    left, top, right, bottom = font.getbbox(str(digit))
    pad = GLYPH // 2
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), str(digit), font=font, fill=255)
    ink = np.asarray(canvas, dtype=np.float32) / 255
    weight = int(rng.integers(-1, 3))
    if weight > 0:
        ink = ndi.grey_dilation(ink, size=(2 * weight + 1,) * 2)
    elif weight < 0:
        thinner = ndi.grey_erosion(ink, size=(3, 3))
        ink = thinner if thinner.max() > 0.5 else ink  # a hairline font keeps its strokes
    h, w = ink.shape
    angle = np.deg2rad(rng.uniform(-8, 8))
    shear = np.tan(np.deg2rad(rng.uniform(-8, 8)))
    stretch = rng.uniform(0.8, 1.2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rot @ np.array([[1.0, 0.0], [shear, 1.0 / stretch]])  # output (y, x) -> input, about the centre
    centre = np.array([h / 2, w / 2])
    ink = ndi.affine_transform(ink, matrix, offset=centre - matrix @ centre, order=1)
    coarse = rng.standard_normal((2, 4, 4)) * (0.015 * max(h, w))
    field = [ndi.zoom(c, (h / 4, w / 4), order=3)[:h, :w] for c in coarse]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ink = ndi.map_coordinates(ink, [yy + field[0], xx + field[1]], order=1)
    return np.round(255 * (1 - np.clip(ink, 0, 1))).astype(np.uint8)


def font_pool(fonts: list[Path], per_glyph: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Every font's ten digits `per_glyph` times: the drawn pages (dark on white), labels, font index."""
    rng = np.random.default_rng(seed)
    pages, labels, writers = [], [], []
    for k, path in enumerate(fonts):
        try:
            font = ImageFont.truetype(str(path), GLYPH)
        except OSError as exc:  # PIL's "unknown file format" names no file
            raise DigitrecError(f"{path}: not a readable font ({exc})") from None
        for digit in range(10):
            for _ in range(per_glyph):
                pages.append(font_digit(font, digit, rng))
                labels.append(digit)
                writers.append(k)
    return pages, np.array(labels, dtype=np.int64), np.array(writers)


def mnist_like(pages: list[np.ndarray]) -> np.ndarray:
    """Pages as MNIST-like uint8 [N, 28, 28] (ink bright), through `preprocess.to_mnist` as `predict` reads
    a file: training digits for `--extra-digits`, or a pool for `synth.compose_number`."""
    return np.stack([np.round(p.image * 255).astype(np.uint8) for p in to_mnist_many(pages)])


def _fetch(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in NPM_FONTS:
        try:
            status = fetch_one(name, out)
        except (OSError, subprocess.SubprocessError, tarfile.TarError, StopIteration) as exc:
            status = f"failed: {exc}"
        failed += status not in ("kept", "fetched")
        print(f"{name}: {status}")
    system = [rel for rel in DEBIAN_FONTS if (SYSTEM_FONTS / rel).is_file()]
    print(f"{len(NPM_FONTS) - failed} npm fonts in {out}; {len(system)} of {len(DEBIAN_FONTS)} Debian fonts installed")
    if failed:
        print(f"{failed} fonts could not be fetched; the split is fixed by name, so the others keep their side")
    return 1 if failed == len(NPM_FONTS) else 0


def _digits(folder: Path, out: Path, per_glyph: int, seed: int, system: bool) -> int:
    fonts = font_files(folder, system)
    if not fonts:
        print(f"handwriting_fonts.py: error: no fonts in {folder}; run `python tools/handwriting_fonts.py fetch`",
              file=sys.stderr)
        return 1
    train = [f for f, held in zip(fonts, held_out(fonts), strict=True) if not held]
    pages, labels, _ = font_pool(train, per_glyph, seed)
    images = mnist_like(pages)
    with atomic_open(out, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels, fonts=np.array([p.name for p in train]))
    print(f"{len(labels)} digits from {len(train)} training fonts (of {len(fonts)}; every third held out) -> {out}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="gather the npm fonts")
    fetch.add_argument("--fonts", default=None, help="folder for the npm fonts")
    digits = sub.add_parser("digits", help="write the training fonts' digits as an .npz for --extra-digits")
    digits.add_argument("out")
    digits.add_argument("--fonts", default=None, help="folder of the npm fonts")
    digits.add_argument("--per-glyph", type=int, default=24, help="draws of each font's each digit")
    digits.add_argument("--seed", type=int, default=0)
    digits.add_argument("--no-system-fonts", action="store_true", help="leave out the installed Debian fonts")
    args = parser.parse_args()
    folder = Path(args.fonts) if args.fonts else default_dir()
    if args.command == "fetch":
        sys.exit(_fetch(folder))
    if args.per_glyph < 1:
        parser.error("--per-glyph must be at least 1")
    out = writable_file(args.out, "OUT")  # before drawing thousands of digits
    sys.exit(_digits(folder, out, args.per_glyph, args.seed, not args.no_system_fonts))


if __name__ == "__main__":
    try:
        main()
    except DigitrecError as exc:  # UsageError (an unwritable OUT) is one too
        raise SystemExit(f"handwriting_fonts.py: error: {exc}") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise SystemExit(f"handwriting_fonts.py: error: {where}{exc.strerror or exc}") from None
