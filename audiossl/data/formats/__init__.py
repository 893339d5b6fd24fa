"""One module per manifest format or corpus, each a reader (and its writer, where one exists).

==============  ===============================================================================
``csv_labels``  plain CSVs naming audio files: ours, HF AudioFolder ``metadata.csv``
``ast_json``    AST / SSAST / AudioMAE ``{"data": [...]}`` datafiles
``fairseq``     wav2vec / data2vec / EAT / MAE-AST ``.tsv`` + ``.lbl``
``esc50``       ESC-50's ``meta/esc50.csv`` and ``audio/``
``audioset``    AudioSet segment lists joined to downloaded clips
``panns``       PANNs waveform and index HDF5 packs
``folder``      bare folders of audio files
``label_map``   ``class_labels_indices.csv`` / ``label_descriptors.csv``
``probe``       audio headers: durations for readers that leave them unknown
``base``        what the readers share (input checks, atomic writes, line numbers); not public
==============  ===============================================================================

Import readers from :mod:`audiossl.data.manifest`, which re-exports them and picks one for a
file (``read_manifest``). The modules here build :class:`audiossl.data.table.Manifest` and never
import :mod:`audiossl.data.manifest`. This ``__init__`` imports none of them, so using one
format does not load the others (nor h5py).
"""
