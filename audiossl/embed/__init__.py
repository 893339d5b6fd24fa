"""Embeddings from a checkpoint: :mod:`audiossl.embed.embedder` turns waveforms into clip and
frame embeddings of any length (the semantics are in its docstring), :mod:`audiossl.embed.outputs`
embeds many files into one HDF5/NPZ file and reads it back."""

from audiossl.embed.embedder import AUTO, POOLINGS, ClipEmbedding, Embedder, auto_pooling, embedding_defaults
from audiossl.embed.outputs import embed_files, read_embeddings, resolve_inputs

__all__ = ["AUTO", "POOLINGS", "ClipEmbedding", "Embedder", "auto_pooling", "embed_files", "embedding_defaults",
           "read_embeddings", "resolve_inputs"]
