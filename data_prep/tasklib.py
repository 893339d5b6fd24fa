"""What the real-audio task builders (``tuxpaint_lid``, ``drums``, ``hedgewars_voices``,
``espeak_kws``, ``espeak_lid``) share: the missing-package exit, stable hash splits, grouping of
clips that must stay on one side of a split, espeak-ng rendering, and writing the manifest.

Every builder writes our canonical ``manifest.csv`` (``labels`` = the class name, ``split`` in
``train``/``valid``/``test``) and ``class_labels_indices.csv`` beside it, atomically, with each
clip's duration read from its header.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

try:
    import audiossl  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from audiossl.data.manifest import LABEL_MAP_NAME, Manifest, probe_durations, write_manifest  # noqa: E402


SPLITS = ("train", "valid", "test")
#: Exit status of a builder whose package (or binary) is missing, so a recipe can skip the task.
EXIT_MISSING = 3
ESPEAK_PACKAGE = "espeak-ng"


class MissingPackage(Exception):
    """The Debian package (or binary) a task reads is not on this machine."""

    def __init__(self, task: str, package: str) -> None:
        self.task, self.package = task, package
        super().__init__(
            f"{task}: {package} is not installed (apt-get install -y --no-install-recommends {package})"
        )


def require_dir(task: str, package: str, path: Path) -> Path:
    """``path`` if it is a folder, else :class:`MissingPackage` (the package puts it there)."""
    if not path.is_dir():
        raise MissingPackage(task, package)
    return path


def find_espeak(task: str, espeak: str = "espeak-ng") -> str:
    """The espeak-ng executable (a name on PATH or a path), else :class:`MissingPackage`."""
    exe = shutil.which(espeak)
    if exe is None:
        raise MissingPackage(task, ESPEAK_PACKAGE)
    return exe


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def unit_hash(key: str, salt: str = "") -> float:
    """A number in [0, 1) that depends only on ``key`` (and ``salt``): the same on every machine
    and Python version, unlike ``hash()``."""
    digest = hashlib.sha1(f"{salt}\0{key}".encode("utf-8")).hexdigest()
    return int(digest[:13], 16) / 16**13


def hash_split(key: str, test: float, valid: float, salt: str = "") -> str:
    """``test`` for the first ``test`` fraction of the hash range, then ``valid``, then ``train``."""
    u = unit_hash(key, salt)
    return "test" if u < test else "valid" if u < test + valid else "train"


def rank_split(keys: Iterable[str], test: float, valid: float, salt: str = "") -> Dict[str, str]:
    """key -> split with *exact* proportions: keys ranked by hash, the first ``round(test * n)``
    to test, the next ``round(valid * n)`` to valid. For a few dozen groups (phrases), where
    :func:`hash_split` can leave a split with a handful; a new key moves at most one boundary."""
    ranked = sorted(set(keys), key=lambda k: (unit_hash(k, salt), k))
    n_test, n_valid = round(test * len(ranked)), round(valid * len(ranked))
    return {k: "test" if i < n_test else "valid" if i < n_test + n_valid else "train" for i, k in enumerate(ranked)}


class Groups:
    """Union-find over string keys: clips linked by a shared text or identical bytes end up in
    one group, and a split decided per group never separates them."""

    def __init__(self) -> None:
        self._parent: Dict[str, str] = {}

    def find(self, key: str) -> str:
        parent = self._parent.setdefault(key, key)
        if parent != key:
            parent = self._parent[key] = self.find(parent)
        return parent

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller key represents the group, so the result is order-free
            lo, hi = sorted((ra, rb))
            self._parent[hi] = lo


def file_digest(path: os.PathLike) -> str:
    """MD5 of the file's bytes (to find byte-identical clips filed under several names)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# espeak-ng
# ---------------------------------------------------------------------------------------------


def render_espeak(exe: str, voice: str, text: str, path: Path, rate: int, pitch: int) -> bool:
    """Render ``text`` to the WAV ``path`` unless it is already there; True when it rendered.

    espeak-ng writes to ``name.partial.wav`` which is renamed when complete, so an interrupted
    run leaves no half file under the final name and a re-run resumes where it stopped."""
    if path.is_file() and path.stat().st_size > 44:  # more than a bare WAV header
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.wav")
    cmd = [exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(partial), "--", text]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not partial.is_file() or partial.stat().st_size <= 44:
            raise RuntimeError(f"espeak-ng -v {voice} {text!r} failed: {proc.stderr.strip() or 'no audio'}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return True


def render_all(exe: str, jobs: Sequence[Tuple[str, str, Path, int, int]], progress: bool = True) -> int:
    """Render every ``(voice, text, path, rate, pitch)`` not yet on disk; how many it rendered."""
    todo = [job for job in jobs if not (job[2].is_file() and job[2].stat().st_size > 44)]
    iterator: Iterable = todo
    if progress and todo:
        from tqdm import tqdm

        iterator = tqdm(todo, desc="espeak-ng", unit="wav")
    for voice, text, path, rate, pitch in iterator:
        render_espeak(exe, voice, text, path, rate, pitch)
    return len(todo)


def safe_name(text: str) -> str:
    """A file-name piece for a voice, variant or text: letters, digits, ``-`` and ``_`` only."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "x"


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def label_map(classes: Sequence[str], display_names: Optional[Mapping[str, str]] = None) -> pd.DataFrame:
    """The label map in the given class order (the task's natural order: digits 0-9, ...)."""
    names = [display_names.get(c, c) if display_names else c for c in classes]
    return pd.DataFrame({"index": range(len(classes)), "mid": list(classes), "display_name": names})


#: Clips shorter than one 25 ms Kaldi fbank window give no frame: builders leave them out.
MIN_SECONDS = 0.025


def finish(
    rows: List[dict],
    out_dir: os.PathLike,
    classes: Sequence[str],
    display_names: Optional[Mapping[str, str]] = None,
    progress: bool = False,
) -> Manifest:
    """Manifest from ``rows`` (``id, path, label, split`` + extras), durations from the headers,
    written to ``out_dir/manifest.csv`` and ``out_dir/class_labels_indices.csv``."""
    if not rows:
        raise ValueError("no clips found")
    table = pd.DataFrame(rows).rename(columns={"label": "labels"})
    table["labels"] = [(label,) for label in table["labels"]]
    table = table.sort_values(["split", "id"], key=_split_order, kind="stable").reset_index(drop=True)
    manifest = probe_durations(Manifest(table, label_map(classes, display_names)), progress=progress)
    short = manifest.table["duration"].astype(float) < MIN_SECONDS
    if short.any():
        # Shorter than one 25 ms Kaldi window: no fbank frame, nothing any front end can embed.
        for row in manifest.table[short].itertuples():
            print(f"dropped {row.path}: {row.duration * 1000:.0f} ms is shorter than one fbank window", file=sys.stderr)
        manifest = Manifest(manifest.table[~short].reset_index(drop=True), manifest.label_map)
    out = Path(out_dir)
    # the folder belongs to this task: a rebuild with other options replaces its label map
    write_manifest(manifest, out / "manifest.csv", label_map_path=out / LABEL_MAP_NAME)
    return manifest


def _split_order(col: pd.Series) -> pd.Series:
    return col.map({s: i for i, s in enumerate(SPLITS)}) if col.name == "split" else col


def split_counts(manifest: Manifest) -> pd.DataFrame:
    """Clips per class (rows, label-map order) and split (columns train, valid, test, total)."""
    t = manifest.table
    labels = [ls[0] for ls in t["labels"]]
    counts = pd.crosstab(pd.Series(labels, name="class"), pd.Series(t["split"].to_numpy(), name="split"))
    classes = manifest.label_map["mid"].tolist()
    counts = counts.reindex(index=classes, columns=list(SPLITS), fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    return counts


def print_counts(task: str, manifest: Manifest, out_dir: os.PathLike) -> None:
    counts = split_counts(manifest)
    minutes = float(manifest.table["duration"].sum()) / 60
    print(f"{task}: {len(manifest)} clips, {manifest.num_classes} classes, {minutes:.1f} min "
          f"-> {Path(out_dir) / 'manifest.csv'}")
    print(counts.to_string())


ROOT_HELP = "where the package is installed or unpacked with dpkg-deb -x (default /)"
ESPEAK_ROOT_HELP = "accepted for a uniform CLI; espeak-ng is found on PATH (or --espeak)"


def base_parser(prog: str, doc: Optional[str], root_help: str = ROOT_HELP) -> argparse.ArgumentParser:
    """``OUT_DIR``, ``--root`` and ``-v``: the arguments every task builder takes."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path, help="where manifest.csv and class_labels_indices.csv go")
    parser.add_argument("--root", type=Path, default=Path("/"), help=root_help)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def run_cli(task: str, build: Callable[..., Manifest], args: argparse.Namespace, **kwargs) -> int:
    """Run ``build(args.out_dir, **kwargs)``, print its counts; status 3 when the package is missing."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = build(args.out_dir, **kwargs)
    except MissingPackage as e:
        print(e, file=sys.stderr)
        return EXIT_MISSING
    except (ValueError, RuntimeError) as e:
        print(f"{task}: error: {e}", file=sys.stderr)
        return 1
    print_counts(task, manifest, args.out_dir)
    return 0
