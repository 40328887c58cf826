"""scripts/bench.py --quick: three peers of 500 entries served on loopback, synced
whole then incrementally; its figures parse and the follower imported exactly each
peer's real experiments, passing over the filler of the shared campaign."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts import bench_network as bench

pytestmark = pytest.mark.integration  # the peers' API served by a child process, on loopback


def test_quick_benchmark_imports_only_the_real_experiments_of_each_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--quick", "--db", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if x.startswith("RESULT ")]
    fields = dict(kv.split("=") for kv in line.split()[1:])
    assert (fields["peers"], fields["entries"], fields["new"]) == ("3", "500", "5")
    # Three real experiments per peer at first, the one real one of each peer's five new
    # entries next; the rest (failed, baseline, peer, another config) is passed over.
    assert (fields["imported_first"], fields["imported_incremental"]) == ("9", "3")
    first, again = float(fields["first_s"]), float(fields["incremental_s"])
    assert first > 0 and again > 0
    assert float(fields["first_cpu_s"]) > 0 and float(fields["incremental_cpu_s"]) > 0
    assert float(fields["peak_rss_mib"]) > 0 and int(fields["growth_mib"]) >= 0
    first_line = re.search(r"first sync: 3 peers, (\d+) entries verified", out)
    again_line = re.search(r"incremental sync: 3 peers, (\d+) entries verified", out)
    assert first_line is not None and int(first_line[1]) == 3 * 500
    assert again_line is not None and int(again_line[1]) == 3 * 5
    assert re.search(r"ratio: the first sync took [\d,]+x the incremental one", out)
