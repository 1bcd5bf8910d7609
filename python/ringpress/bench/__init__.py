"""ringpress's benchmarks: ``ringpress bench allreduce | codecs | compressors | train``.

Modules: ``cli`` (the command), ``allreduce`` (ringpress vs gloo vs Open MPI), ``codecs``
(lossless, vs blosc2), ``compressors`` (lossy, vs torch / numpy), ``gradients`` (the real
gradients they run on), ``launch`` (starting and stopping local ranks), ``netns`` (ranks in
network namespaces joined by shaped links), ``_common`` (timing, formatting, output paths,
progress bar). Importing this package imports nothing optional: torch, mpi4py, blosc2 and
matplotlib are imported where a benchmark needs them, and a missing one is skipped with a note.
"""
