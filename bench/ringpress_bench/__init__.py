"""ringpress's benchmarks, a package beside the runtime: ``ringpress bench allreduce | codecs |
compressors | compressed | train | netns | kernels`` (``python -m ringpress_bench ...`` is the same).

Installed next to ringpress (``pip install ./bench`` in a checkout; ``make demo`` and ``make test``
do it), never shipped in the runtime's wheel. The runtime's ``ringpress`` command finds the
``bench`` and ``kernels`` subcommands through the ``ringpress.cli`` entry-point group this package
registers; the runtime never imports this package by name.

Modules, each importing only those above it in this list: ``_common`` (timing, formatting, output
paths, progress bar), ``launch`` (starting and stopping local ranks: processes, signals, shared
memory), ``netns`` (ranks in network namespaces joined by shaped links), ``runner`` (the command
line, alone mode's spawning, exit codes: what every benchmark shares), ``gradients`` (the real
gradients the benchmarks run on), then the benchmarks: ``allreduce`` (ringpress vs gloo vs Open
MPI), ``lossless_codecs`` (vs blosc2), ``gradient_compressors`` (lossy, vs torch / numpy),
``compressed_allreduce`` (compressed allreduce vs gloo), ``train`` (DDP training per
communication mode), ``shuffle_kernels`` (the SIMD shuffle kernels vs numpy). Importing this
package imports nothing optional: torch, mpi4py, blosc2 and matplotlib are imported where a
benchmark needs them, and a missing one is skipped with a note.
"""
