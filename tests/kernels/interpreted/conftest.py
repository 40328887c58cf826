"""Tests of our Triton kernels under the Triton interpreter, on the CPU.

TRITON_INTERPRET must be set before triton is first imported, which the main test session
cannot promise, so these files are collected only in a process started with
TRITON_INTERPRET=1: tests/kernels/test_kernels_fir.py runs this directory that way in a
subprocess. In any other session the directory is skipped at collection.
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["test_*.py"]
