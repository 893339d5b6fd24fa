"""The real-audio task builders (data_prep/tuxpaint_lid.py, drums.py, hedgewars_voices.py,
espeak_kws.py, espeak_lid.py) on tiny synthetic package trees, and as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from audiossl.data.manifest import read_manifest  # noqa: E402
from data_prep import drums, espeak_kws, espeak_lid, hedgewars_voices, tasklib, tasks, tuxpaint_lid  # noqa: E402

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")


def _run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"data_prep/{script}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _audio(path: Path, seed: int, seconds: float = 0.1, fmt: str = "WAV") -> Path:
    """A short noise clip; a different seed gives different bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).uniform(-0.3, 0.3, int(16000 * seconds)).astype(np.float32)
    if fmt == "OGG":
        sf.write(path, noise, 16000, format="OGG", subtype="VORBIS")
    else:
        sf.write(path, noise, 16000, subtype="PCM_16")
    return path


def _by(manifest, column):
    """{value of column: set of splits it appears in}."""
    out = {}
    for value, split in zip(manifest.table[column], manifest.table["split"]):
        out.setdefault(value, set()).add(split)
    return out


def _labels(manifest):
    return [ls[0] for ls in manifest.table["labels"]]


# ---------------------------------------------------------------------------------------------
# Registry and CLI
# ---------------------------------------------------------------------------------------------


def test_registry_names_every_builder():
    names = [t.name for t in tasks.TASKS]
    assert names == ["tuxpaint_lid", "drums", "hedgewars_voices", "espeak_kws", "espeak_lid"]
    for task in tasks.TASKS:
        assert (REPO / task.module).is_file()
        assert task.package and task.description
    proc = _run("tasks.py", "--names")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == names
    assert tasks.get("drums").package == "hydrogen-drumkits"


@pytest.mark.parametrize("task", [t.name for t in tasks.TASKS])
def test_help(task):
    proc = _run(f"{task}.py", "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: data_prep/{task}.py" in proc.stdout


@pytest.mark.parametrize("task", [t.name for t in tasks.TASKS])
def test_missing_package_exits_3_with_one_line(task, tmp_path):
    package = tasks.get(task).package
    extra = ["--espeak", str(tmp_path / "no" / "espeak-ng")] if package == "espeak-ng" else []
    proc = _run(f"{task}.py", tmp_path / "out", "--root", tmp_path / "empty_root", *extra)
    assert proc.returncode == tasklib.EXIT_MISSING == 3, proc.stderr
    assert proc.stderr == (f"{task}: {package} is not installed "
                           f"(apt-get install -y --no-install-recommends {package})\n")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_hash_split_is_stable_and_proportional():
    keys = [f"stamp{i}" for i in range(2000)]
    splits = [tasklib.hash_split(k, 0.2, 0.1, salt="x") for k in keys]
    assert splits == [tasklib.hash_split(k, 0.2, 0.1, salt="x") for k in keys]
    share = {s: splits.count(s) / len(keys) for s in tasklib.SPLITS}
    assert abs(share["test"] - 0.2) < 0.04 and abs(share["valid"] - 0.1) < 0.03
    ranked = tasklib.rank_split(keys[:40], 0.25, 0.15)
    assert sorted(ranked.values()).count("test") == 10 and list(ranked.values()).count("valid") == 6


# ---------------------------------------------------------------------------------------------
# Tux Paint
# ---------------------------------------------------------------------------------------------


def _tuxpaint(root: Path) -> Path:
    base = root / tuxpaint_lid.STAMPS_DIR
    seed = 0
    stamps = {f"animals/animal{i:02d}": f"Animal number {i}." for i in range(40)}
    # four alphabet stamps with one text, and the same star recording filed in two places
    stamps.update({"alphabets/filled/p_filled": "The letter P.", "alphabets/outlined/P_outline": "The letter P.",
                   "shapes/star": "A star.", "christmas/star": None})
    for stamp, text in stamps.items():
        for lang in ("fr", "ru", "es"):
            seed += 1
            _audio(base / f"{stamp}_desc_{lang}.ogg", seed, fmt="OGG")
        if text is not None:
            (base / f"{stamp}.txt").write_text(f"{text}\nfr.utf8=...\n", encoding="utf-8")
    shutil.copyfile(base / "shapes/star_desc_ru.ogg", base / "christmas/star_desc_ru.ogg")
    _audio(base / "animals/animal00_desc_da.ogg", 999, fmt="OGG")      # not a chosen language
    _audio(base / "animals/odd_desc_da.ogg.ogg", 998, fmt="OGG")       # misnamed in the real package
    _audio(base / "animals/animal00.ogg", 997, fmt="OGG")              # a sound effect, not a description
    return root


def test_tuxpaint_lid_splits_by_stamp_text(tmp_path):
    root, out = _tuxpaint(tmp_path / "root"), tmp_path / "out"
    m = tuxpaint_lid.build(out, root=root, langs=("fr", "ru", "es"))
    assert m.label_map["mid"].tolist() == ["es", "fr", "ru"]
    assert m.label_map["display_name"].tolist() == ["Spanish", "French", "Russian"]
    assert len(m) == 44 * 3 and sorted(set(_labels(m))) == ["es", "fr", "ru"]
    assert all(len(s) == 1 for s in _by(m, "stamp").values())          # a stamp's languages stay together
    assert all(len(s) == 1 for s in _by(m, "group").values())
    group = dict(zip(m.table["stamp"], m.table["group"]))
    assert group["alphabets/filled/p_filled"] == group["alphabets/outlined/P_outline"]  # same text
    assert group["christmas/star"] == group["shapes/star"]                             # same bytes
    assert group["animals/animal01"] != group["animals/animal02"]
    assert set(m.table["split"]) == {"train", "valid", "test"}
    assert (m.table["duration"] - 0.1).abs().max() < 0.01
    back = read_manifest(out / "manifest.csv")
    assert len(back) == len(m) and back.label_map["mid"].tolist() == ["es", "fr", "ru"]
    counts = tasklib.split_counts(m)
    assert counts.loc["total", "total"] == len(m) and (counts.loc[["es", "fr", "ru"], "total"] == 44).all()


def test_tuxpaint_lid_max_per_class_is_proportional_and_parallel(tmp_path):
    root = _tuxpaint(tmp_path / "root")
    full = tuxpaint_lid.build(tmp_path / "full", root=root, langs=("fr", "ru", "es"))
    small = tuxpaint_lid.build(tmp_path / "small", root=root, langs=("fr", "ru", "es"), max_per_class=10)
    assert len(small) == 30
    full_counts, small_counts = tasklib.split_counts(full), tasklib.split_counts(small)
    for split in tasklib.SPLITS:
        expected = 10 * full_counts.loc["fr", split] / full_counts.loc["fr", "total"]
        assert abs(small_counts.loc["fr", split] - expected) <= 1
    stamps = {lang: set(small.table["stamp"][np.array(_labels(small)) == lang]) for lang in ("fr", "ru", "es")}
    assert stamps["fr"] == stamps["ru"] == stamps["es"]                 # the same texts in every language
    again = tuxpaint_lid.build(tmp_path / "again", root=root, langs=("fr", "ru", "es"), max_per_class=10)
    assert again.table["id"].tolist() == small.table["id"].tolist()


def test_tuxpaint_lid_script(tmp_path):
    root, out = _tuxpaint(tmp_path / "root"), tmp_path / "out"
    proc = _run("tuxpaint_lid.py", out, "--root", root, "--langs", "fr", "ru", "--max-per-class", "20")
    assert proc.returncode == 0, proc.stderr
    assert "tuxpaint_lid: 40 clips, 2 classes" in proc.stdout
    assert "train" in proc.stdout and "total" in proc.stdout
    assert (out / "manifest.csv").is_file() and (out / "class_labels_indices.csv").is_file()
    assert read_manifest(out / "manifest.csv").table.columns[:6].tolist() == [
        "id", "path", "labels", "duration", "split", "fold"]


# ---------------------------------------------------------------------------------------------
# Hydrogen drum kits
# ---------------------------------------------------------------------------------------------

_XML_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
             '<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">\n<name>{kit}</name>\n<instrumentList>\n')


def _drumkit(kit_dir: Path, instruments, seed: int) -> None:
    """``instruments``: (name, [sample file names]); every named file is written unless it starts with 'missing'."""
    parts = [_XML_HEAD.format(kit=kit_dir.name)]
    for i, (name, files) in enumerate(instruments):
        layers = "".join(f"<layer><filename>{f}</filename><min>0</min><max>1</max></layer>" for f in files)
        parts.append(f"<instrument><id>{i}</id><name>{name}</name>{layers}</instrument>\n")
        for j, f in enumerate(files):
            if not f.startswith("missing") and not (kit_dir / f).exists():
                _audio(kit_dir / f, seed * 100 + i * 10 + j)
    parts.append("</instrumentList>\n</drumkit_info>\n")
    kit_dir.mkdir(parents=True, exist_ok=True)
    (kit_dir / "drumkit.xml").write_text("".join(parts))


def _drum_tree(root: Path) -> Path:
    base = root / drums.DRUMKITS_DIR
    full = [("Kick", ["kick_1.wav", "kick_2.wav"]), ("Snare Rock", ["snare.wav"]), ("Rim Click", ["rim.wav"]),
            ("Closed HH", ["hh.wav"]), ("Tom Mid", ["tom.wav"]), ("Tom Hi", ["tom.wav"]),  # one file, two pads
            ("Crash", ["crash.wav"]), ("Hand Clap", ["clap.wav"]), ("Cowbell", ["cowbell.wav"]),
            ("redo super opaco", ["snare-opaque-1.wav"]), ("17", ["emptySample.wav"]), ("Ride", ["missing.wav"])]
    for seed, kit in enumerate(["Train Kit", "Valid Kit", "Test Kit"], start=1):
        _drumkit(base / kit, full, seed)
    _drumkit(base / "Other Kit", [("Kick", ["k.wav"]), ("Crash", ["c.wav"])], seed=9)
    shutil.copyfile(base / "Test Kit" / "crash.wav", base / "Other Kit" / "c.wav")  # the same bytes in two kits
    return root


def test_drums_labels_and_leave_kits_out(tmp_path):
    root = _drum_tree(tmp_path / "root")
    m = drums.build(tmp_path / "out", root=root, test_kits=["Test Kit"], valid_kits=["Valid Kit"])
    assert m.label_map["mid"].tolist() == ["kick", "snare", "hihat", "tom", "cymbal"]
    assert all(len(s) == 1 for s in _by(m, "kit").values())
    split_of = {k: s.pop() for k, s in _by(m, "kit").items()}
    assert split_of == {"Train Kit": "train", "Valid Kit": "valid", "Test Kit": "test", "Other Kit": "train"}
    per_kit = {}
    for kit, label in zip(m.table["kit"], _labels(m)):
        per_kit.setdefault(kit, []).append(label)
    # kick x2 layers, snare + rim click + the file-name fallback, hihat, tom once (shared file), crash
    assert sorted(per_kit["Train Kit"]) == sorted(["kick", "kick", "snare", "snare", "snare", "hihat", "tom", "cymbal"])
    # Test Kit's crash has a copy in Other Kit: both are dropped, no recording on two sides of the split
    assert sorted(per_kit["Test Kit"]) == sorted(["kick", "kick", "snare", "snare", "snare", "hihat", "tom"])
    assert sorted(per_kit["Other Kit"]) == ["kick"]
    assert not any("clap" in p or "cowbell" in p or "emptySample" in p for p in m.table["path"])


def test_drums_kit_lists_cannot_overlap(tmp_path):
    root = _drum_tree(tmp_path / "root")
    with pytest.raises(ValueError, match="both in test and valid"):
        drums.build(tmp_path / "out", root=root, test_kits=["Test Kit"], valid_kits=["Test Kit"])


@pytest.mark.parametrize("name, label", [
    ("Kick (Tama Superstar 22\")", "kick"), ("c3 - bass drum 1", "kick"), ("Pearl Side Stick", "snare"),
    ("Snare Rimshot", "snare"), ("Hi-Hat Semiopen", "hihat"), ("Side OHH", "hihat"), ("Floor Tom", "tom"),
    ("Ride Bell", "cymbal"), ("China (Paiste Alpha 18\")", "cymbal"), ("Zildjian Splash Choke", "cymbal"),
    ("Dununba1 Bell", None), ("Hand Clap", None), ("Finger Snaps", None), ("VariBreaks Drum 1", None),
    ("Sample: beats_01-10.flac", None), ("Zap 1", None), ("Tambourine Pedal", None),
])
def test_drum_names(name, label):
    assert drums.label_of(name, "x.wav") == label


# ---------------------------------------------------------------------------------------------
# Hedgewars
# ---------------------------------------------------------------------------------------------


def _hedgewars(root: Path) -> Path:
    base = root / hedgewars_voices.VOICES_DIR
    phrases = ["Hello", "Byebye", "Ow1", "Ow2", "Ow3", "Oops", "Drat", "Victory", "Coward", "Missed",
               "Boring", "Excellent", "Incoming", "Traitor", "Stupid", "Nutter"]
    seed = 0
    for pack in ["Alpha", "Bravo", "Charlie", "Delta"]:
        for phrase in phrases:
            seed += 1
            _audio(base / pack / f"{phrase}.ogg", seed, fmt="OGG")
    _audio(base / "Alpha" / "Rare.ogg", 500, fmt="OGG")                 # said in one pack only
    for phrase in phrases[:3]:                                             # a pack too small to keep
        seed += 1
        _audio(base / "Echo" / f"{phrase}.ogg", seed, fmt="OGG")
    shutil.copyfile(base / "Bravo" / "Hello.ogg", base / "Charlie" / "Hello.ogg")  # whose voice is it?
    shutil.copyfile(base / "Delta" / "Oops.ogg", base / "Delta" / "Drat.ogg")      # one take, two names
    return root


def test_hedgewars_voices_split_by_phrase_family(tmp_path):
    root = _hedgewars(tmp_path / "root")
    m = hedgewars_voices.build(tmp_path / "out", root=root, min_packs=2, min_clips=8)
    assert m.label_map["mid"].tolist() == ["Alpha", "Bravo", "Charlie", "Delta"]
    assert m.label_map["display_name"].tolist()[0] == "Alpha voice pack"
    ids = set(m.table["id"])
    assert "Bravo/Hello" not in ids and "Charlie/Hello" not in ids and "Alpha/Hello" in ids
    assert "Delta/Drat" in ids and "Delta/Oops" not in ids                # kept once, under its first name
    assert "Alpha/Rare" not in ids and not any(i.startswith("Echo/") for i in ids)
    assert len(m) == 4 * 16 - 2 - 1
    assert all(len(s) == 1 for s in _by(m, "phrase_family").values())
    assert len(_by(m, "phrase").keys()) == 16
    family = dict(zip(m.table["phrase"], m.table["phrase_family"]))
    assert family["Ow1"] == family["Ow3"] == "ow"
    assert set(m.table["split"]) == {"train", "valid", "test"}


def test_hedgewars_script_prints_counts(tmp_path):
    root = _hedgewars(tmp_path / "root")
    proc = _run("hedgewars_voices.py", tmp_path / "out", "--root", root, "--min-packs", "2", "--min-clips", "8")
    assert proc.returncode == 0, proc.stderr
    assert "hedgewars_voices: 61 clips, 4 classes" in proc.stdout
    assert "Alpha" in proc.stdout and "valid" in proc.stdout


# ---------------------------------------------------------------------------------------------
# espeak-ng
# ---------------------------------------------------------------------------------------------


@needs_espeak
def test_espeak_kws_renders_resumably_and_splits_by_voice(tmp_path):
    out = tmp_path / "kws"
    kwargs = dict(words=("one", "two"), voices=("en-us", "en-029", "en-us-nyc"), variants=("default",), rates=(175,))
    m = espeak_kws.build(out, **kwargs)
    assert len(m) == 6 and m.label_map["mid"].tolist() == ["one", "two"]
    assert dict(zip(m.table["voice"], m.table["split"])) == {"en-us": "train", "en-029": "test", "en-us-nyc": "valid"}
    wavs = sorted((out / "audio").rglob("*.wav"))
    assert len(wavs) == 6 and not any("partial" in w.name for w in wavs)
    assert all(0.1 < d < 3 for d in m.table["duration"])
    mtimes = {w: w.stat().st_mtime_ns for w in wavs}
    proc = _run("espeak_kws.py", out, "--words", "one", "two", "--voices", "en-us", "en-029", "en-us-nyc",
                "--variants", "default", "--rates", "175")
    assert proc.returncode == 0, proc.stderr
    assert "rendered 0 new WAV(s), 6 already there" in proc.stdout
    assert {w: w.stat().st_mtime_ns for w in wavs} == mtimes
    (wavs[0]).unlink()                                                   # an interrupted run resumes
    espeak_kws.build(out, **kwargs)
    assert wavs[0].is_file()


@needs_espeak
def test_espeak_lid_splits_by_variant(tmp_path):
    m = espeak_lid.build(tmp_path / "lid", langs=("es", "de"), num_texts=2, variants=("m1", "m5", "m7"), rates=(175,))
    assert len(m) == 2 * 2 * 3 and m.label_map["mid"].tolist() == ["de", "es"]
    assert dict(zip(m.table["variant"], m.table["split"])) == {"m1": "train", "m5": "valid", "m7": "test"}
    assert all(len(s) == 1 for s in _by(m, "variant").values())
    # the same texts in every language: the label is not the text
    texts = {lang: set(m.table["text_id"][np.array(_labels(m)) == lang]) for lang in ("es", "de")}
    assert texts["es"] == texts["de"] == {"d0", "d1"}


def test_espeak_lid_has_every_text_in_every_language():
    ids = {lang: [t for t, _ in espeak_lid.texts(lang)] for lang in espeak_lid.VOICES}
    assert all(v == ids["es"] for v in ids.values()) and len(ids["es"]) == 20
    with pytest.raises(ValueError, match="no texts for xx"):
        espeak_lid.build("unused", langs=("xx",))


def test_clips_shorter_than_one_fbank_window_are_left_out(tmp_path, capsys) -> None:
    # hydrogen's Audiophob kit has 12 and 17 ms hits: no fbank frame, nothing to embed.
    rows = []
    for name, seconds in (("long", 0.5), ("short", 0.012)):
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)
        rows.append({"id": name, "path": str(path), "label": "kick", "split": "train"})
    manifest = tasklib.finish(rows, tmp_path / "out", ["kick"])
    assert manifest.table["id"].tolist() == ["long"]
    assert "short.wav: 12 ms is shorter than one fbank window" in capsys.readouterr().err
    assert read_manifest(tmp_path / "out" / "manifest.csv").table["id"].tolist() == ["long"]
