# Copyright (c) mmvit3 authors. All rights reserved.
"""The process of one measurement: ``python -m mmvit3.benchmark.child
JOB_JSON``, started by :func:`~.measurement.run_job`, prints the job's
``RESULT`` line. A module of its own that the package does not import, so
that ``-m`` runs it fresh."""
import sys

from .measurement import child_main

if __name__ == '__main__':
    sys.exit(child_main(sys.argv[1]))
