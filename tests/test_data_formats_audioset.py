"""audiossl/data/formats/audioset.py: segment lists as real copies have them, and their join to
downloaded clips under every naming scheme, with the missing segments reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audiossl.data.formats.audioset import (
    audioset_split_name,
    join_audioset_clips,
    read_audioset_segments,
    scan_audioset_clips,
)
from audiossl.data.table import COLUMNS, ManifestError

from test_manifest import make_label_map, make_wav


AS_LABELS = make_label_map("/m/09x0r", "/t/dd00088", "/m/012xff", "/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk")
SEGMENTS = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=6, num_segs=6, num_unique_labels=7, num_positive_labels=11\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
    '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
    '--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
    '--4gqARaEJE,0.000,10.000,"""/m/068hy",/m/07q6cd_,/m/0bt9lr,"/m/0jbk""",,,,,,,\n'
    '--i-y1v8Hy8, 0.000, 9.000, "/m/09x0r"\n'
    'abc_defghi_, 120.500, 130.500, "/m/0jbk"\n'
    '\n'
    'Zz9_-Aa0_b1, 10.000, 20.000, "/m/09x0r,/m/0jbk"\n'
)


def test_read_audioset_segments_tolerates_real_variants(tmp_path):
    path = tmp_path / "balanced_train_segments.csv"
    path.write_text(SEGMENTS)
    seg = read_audioset_segments(path, label_map=AS_LABELS)
    assert seg["ytid"].tolist() == ["--PJHxphWEs", "--ZhevVpy1s", "--4gqARaEJE", "--i-y1v8Hy8", "abc_defghi_", "Zz9_-Aa0_b1"]
    assert seg["start"].tolist() == [30.0, 50.0, 0.0, 0.0, 120.5, 10.0]
    assert seg["end"].tolist() == [40.0, 60.0, 10.0, 9.0, 130.5, 20.0]
    assert seg["labels"].iat[0] == ("/m/09x0r", "/t/dd00088")
    assert seg["labels"].iat[2] == ("/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk")
    assert seg["line"].tolist() == [4, 5, 6, 7, 8, 10]
    assert audioset_split_name(path) == "balanced_train"


@pytest.mark.parametrize(
    "row, message",
    [
        ('--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/nope"', "label '/m/nope' is not in the label table (7 classes)"),
        ('--PJHxphWE, 30.000, 40.000, "/m/09x0r"', "'--PJHxphWE' is not a YouTube id"),
        ('--PJHxphWEs, thirty, 40.000, "/m/09x0r"', "are not numbers"),
        ('--PJHxphWEs, 40.000, 40.000, "/m/09x0r"', "is empty or negative"),
        ("--PJHxphWEs", "expected 'YTID, start, end"),
    ],
)
def test_read_audioset_segments_errors_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "eval_segments.csv"
    path.write_text('# header\n--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n' + row + "\n")
    with pytest.raises(ManifestError) as e:
        read_audioset_segments(path, label_map=AS_LABELS)
    assert (e.value.path, e.value.line) == (str(path), 3)
    assert message in e.value.reason


def test_join_audioset_clips_every_naming_scheme_and_missing_report(tmp_path):
    seg_path = tmp_path / "balanced_train_segments.csv"
    seg_path.write_text(SEGMENTS)
    seg = read_audioset_segments(seg_path)
    audio = tmp_path / "audio"
    make_wav(audio / "part00" / "Y--PJHxphWEs.wav")  # PANNs
    make_wav(audio / "_" / "_" / "--ZhevVpy1s_50.000.flac")  # AST, seconds with decimals
    make_wav(audio / "--ZhevVpy1s.wav")  # a second copy of the same clip: the one with a start wins
    make_wav(audio / "strong" / "abc_defghi__120500.wav")  # milliseconds; YTID ending in "_"
    make_wav(audio / "Zz9_-Aa0_b1.flac")  # HF, bare id
    make_wav(audio / "--i-y1v8Hy8_3.000.wav")  # right id, wrong start: not this segment
    make_wav(audio / "dcase" / "Y--i-y1v8Hy8_0.000_9.000.wav")  # DCASE
    make_wav(audio / "unrelated.wav")
    m, missing = join_audioset_clips(seg, audio, AS_LABELS)
    t = m.table
    assert t["id"].tolist() == ["--PJHxphWEs", "--ZhevVpy1s", "--i-y1v8Hy8", "abc_defghi_", "Zz9_-Aa0_b1"]
    assert t["path"].tolist() == [
        str(audio / "part00" / "Y--PJHxphWEs.wav"),
        str(audio / "_" / "_" / "--ZhevVpy1s_50.000.flac"),
        str(audio / "dcase" / "Y--i-y1v8Hy8_0.000_9.000.wav"),
        str(audio / "strong" / "abc_defghi__120500.wav"),
        str(audio / "Zz9_-Aa0_b1.flac"),
    ]
    np.testing.assert_allclose(t["duration"], [10.0, 10.0, 9.0, 10.0, 10.0])
    assert t["split"].tolist() == ["balanced_train"] * 5
    assert t["start"].tolist() == [30.0, 50.0, 0.0, 120.5, 10.0]
    assert t["labels"].iat[0] == ("/m/09x0r", "/t/dd00088")
    np.testing.assert_array_equal(m.labels_multi_hot()[0], [1, 1, 0, 0, 0, 0, 0])
    assert missing.to_dict("records") == [
        {"ytid": "--4gqARaEJE", "start": 0.0, "end": 10.0, "labels": "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk",
         "source": str(seg_path), "line": 6}
    ]
    # the extension preference decides between two bare copies
    files = scan_audioset_clips(audio, extensions=(".wav", ".flac"))
    assert len(files) == 7  # unrelated.wav has no clip name
    m2, _ = join_audioset_clips(seg, files, AS_LABELS, split="x")
    assert m2.table["split"].tolist() == ["x"] * 5


def test_join_audioset_clips_with_no_audio_reports_every_segment_missing(tmp_path):
    seg_path = tmp_path / "eval_segments.csv"
    seg_path.write_text(SEGMENTS)
    (tmp_path / "audio").mkdir()
    m, missing = join_audioset_clips(read_audioset_segments(seg_path), tmp_path / "audio", AS_LABELS)
    assert len(m) == 0 and list(m.table.columns) == list(COLUMNS) + ["start", "end"]
    assert missing["line"].tolist() == [4, 5, 6, 7, 8, 10]


def test_join_audioset_clips_rejects_duplicate_ytids_and_unknown_mids(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text('--PJHxphWEs, 30.000, 40.000, "/m/09x0r"\n')
    b.write_text('# c\n--PJHxphWEs, 0.000, 10.000, "/m/09x0r"\n')
    seg = pd.concat([read_audioset_segments(a), read_audioset_segments(b)], ignore_index=True)
    (tmp_path / "audio").mkdir()
    with pytest.raises(ManifestError) as e:
        join_audioset_clips(seg, tmp_path / "audio", AS_LABELS)
    assert (e.value.path, e.value.line) == (str(b), 2) and f"also {a}:1" in e.value.reason
    b.write_text('--ZhevVpy1s, 0.000, 10.000, "/m/zzz"\n')
    with pytest.raises(ManifestError) as e:
        join_audioset_clips(read_audioset_segments(b), tmp_path / "audio", AS_LABELS)
    assert (e.value.path, e.value.line) == (str(b), 1)
