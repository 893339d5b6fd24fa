"""Bad inputs get a clear error naming the file and the problem (issue 13): broken checkpoints
are told from pickled ones, and paths that are not regular files say what they are."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from audiossl.audio import AudioError, info, load
from audiossl.checkpoint import CheckpointError, load_checkpoint, load_foreign, native_payload, save_checkpoint
from audiossl.models.registry import build_model


@pytest.fixture
def broken(tmp_path: Path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    data = good.read_bytes()
    files = {
        "random": os.urandom(4096),
        "text": b"hello world\n" * 100,
        "truncated": data[: len(data) // 2],
    }
    for name, content in files.items():
        (tmp_path / f"{name}.pt").write_bytes(content)
    return tmp_path


@pytest.mark.parametrize("name", ["random", "text", "truncated"])
@pytest.mark.parametrize("load", [load_checkpoint, load_foreign, lambda p: load_foreign(p, trust=True)])
def test_a_broken_checkpoint_is_called_broken_not_pickled(broken: Path, name: str, load) -> None:
    with pytest.raises(CheckpointError) as e:
        load(broken / f"{name}.pt")
    assert f"{name}.pt: is not a readable PyTorch checkpoint" in str(e.value)
    assert "pickled" not in str(e.value) and "--trust-checkpoint" not in str(e.value)


def test_a_pickled_checkpoint_is_still_refused_without_trust_and_loads_with_it(tmp_path: Path) -> None:
    path = tmp_path / "fairseq.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(CheckpointError, match="holds pickled Python objects.*--trust-checkpoint"):
        load_foreign(path)
    with pytest.raises(CheckpointError, match="not a native audiossl checkpoint .it holds pickled"):
        load_checkpoint(path)
    assert load_foreign(path, trust=True)["args"].lr == 1e-3


def test_a_directory_given_as_checkpoint_says_so_and_points_inside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_checkpoint(run / "model.pt", native_payload(build_model("maeast_patch_tiny"), family="maeast"))
    with pytest.raises(CheckpointError, match=r"run: is a directory, not a checkpoint file; pass one of its files, e\.g\. .*model\.pt"):
        load_checkpoint(run)
    with pytest.raises(CheckpointError, match=r"empty: is a directory, not a checkpoint file$"):
        load_checkpoint((tmp_path / "empty").mkdir() or tmp_path / "empty")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "loop"])
def test_special_files_are_named_for_what_they_are(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path, reason = tmp_path / "a.wav", "is a FIFO, not an audio file"
        os.mkfifo(path)
    elif kind == "dev_zero":
        path, reason = Path("/dev/zero"), "is a character device, not an audio file"
    else:
        path, reason = tmp_path / "a.wav", "is a symbolic link loop"
        os.symlink("a.wav", path)
    for fn in (load, info):
        with pytest.raises(AudioError, match=f"{path.name}: {reason}"):
            fn(path)
    with pytest.raises(CheckpointError, match=f"{path.name}: {reason.replace('an audio file', 'a checkpoint file')}"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------ manifests (item 6)
@pytest.mark.parametrize("body, line, reason", [
    # one extra field on every row: pandas would take the first column as an index and shift
    # every column by one (id <- path, path <- labels) without a word
    ("a,/x/a.wav,dog,1\nb,/x/b.wav,cat,2\n", 2, "a record has 4 fields, the header has 3 (id, path, labels)"),
    ("a,/x/a.wav,dog\nb,/x/b.wav,cat,2\n", 3, "a record has 4 fields, the header has 3"),
    ('a,/x/a.wav,dog\nb,"/x/b.wav,cat\nc,/x/c.wav,cow\n', 3, 'a quoted field is never closed'),
    ('"a,/x/a.wav,dog\nb,/x/b.wav,cat\n', 2, 'a quoted field is never closed'),
])
def test_a_malformed_csv_manifest_names_file_and_line(tmp_path: Path, body: str, line: int, reason: str) -> None:
    from audiossl.data.manifest import ManifestError, read_manifest

    path = tmp_path / "train.csv"
    path.write_text("id,path,labels\n" + body)
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert (e.value.path, e.value.line) == (str(path), line) and reason in e.value.reason
    assert str(e.value).startswith(f"{path}:{line}: ")


def test_a_csv_with_a_trailing_delimiter_on_every_row_still_reads(tmp_path: Path) -> None:
    from audiossl.data.manifest import read_manifest

    path = tmp_path / "train.csv"
    path.write_text("id,path,labels\na,/x/a.wav,dog,\nb,/x/b.wav,cat,\n")
    m = read_manifest(path)
    assert list(m.table["id"]) == ["a", "b"] and list(m.table["path"]) == ["/x/a.wav", "/x/b.wav"]


def test_a_checkpoint_that_does_not_fit_its_model_names_the_file(tmp_path: Path) -> None:
    from audiossl.models.registry import encoder_from_checkpoint, model_from_checkpoint

    payload = native_payload(build_model("maeast_patch_tiny"), family="maeast")
    payload["model"].pop(next(iter(payload["model"])))
    path = save_checkpoint(tmp_path / "cut.pt", payload)
    for fn in (model_from_checkpoint, encoder_from_checkpoint):
        with pytest.raises(CheckpointError, match=r"cut\.pt: does not fit the model .*missing keys"):
            fn(path)
