"""The pytest face of linklab: three plugins registered as ``pytest11`` entry points, so their
options and fixtures work from any rootdir and in any project that installs linklab.

``plugin``  options (--scenarios, --results-dir, --run-id), fixtures (run, results, ...), the
            connectivity results rows and the default-namespace snapshot;
``bench``   the benchmark options (--bench-*) and the measurement fixtures;
``vm``      ``--vm``: run the selection inside a QEMU guest on a distro kernel.
"""
