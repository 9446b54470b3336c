"""make bench's chart: every label fits beside the bars (wrapped), none runs under them."""
import itertools
import xml.etree.ElementTree as ET

import pytest

from devtools import bench

pytestmark = pytest.mark.unit

NAMES = ["busybox sh script (anchor)", "pyinit --modules virtio_pci,virtio_blk,ext4 (zstd)",
         "pyinit --modules virtio_pci,virtio_blk,ext4 (none)", "pyinit host-only, the default (zstd)",
         "pyinit, the host-only set built by Debian 13's python3.13 (zstd)", "x" * 90]


def test_wrapped_labels_fit_the_label_column_and_keep_every_character():
    limit = int((bench.LABEL_W - 16) // bench.CHAR_W)
    for name in NAMES:
        lines = bench.wrap_label(name)
        assert all(len(line) <= limit for line in lines), lines
        assert "".join(lines).replace(" ", "") == name.replace(" ", "")
    assert bench.wrap_label("pyinit host-only, the default (zstd)") == ["pyinit host-only, the default (zstd)"]
    assert bench.wrap_label("pyinit --modules virtio_pci,virtio_blk,ext4 (gzip)")[-1] == "(gzip)"


def test_chart_rows_do_not_overlap_and_labels_stay_left_of_the_bars():
    runs = [{"kernel": kver, "rounds": 5,
             "candidates": [{"name": n, "compressed": (i + 1) * 1e6, "boots": [{"kernel_to_real_init": 2.0 + i}]}
                            for i, n in enumerate(NAMES)]}
            for kver in ("6.1.0-50-amd64", "7.3.4+deb13-amd64")]
    svg = ET.fromstring(bench.chart(runs))
    ns = "{http://www.w3.org/2000/svg}"
    labels = [t for t in svg.iter(ns + "text") if t.find(ns + "tspan") is not None]
    assert len(labels) == 2 * len(NAMES)
    assert any("".join(t.itertext()).startswith("7.3.4:") for t in labels)
    anchors = [line for line in svg.iter(ns + "line") if line.get("stroke-dasharray") and float(line.get("y1")) > 50]
    assert len(anchors) == 2  # one busybox line per kernel, each over its own rows
    assert float(anchors[0].get("y2")) < float(anchors[1].get("y1"))
    for t in labels:
        for span in t.iter(ns + "tspan"):
            assert len(span.text) * bench.CHAR_W <= bench.LABEL_W - 16, span.text
    bars = [r for r in svg.iter(ns + "rect") if r.get("fill") == "#3b6fb6" and float(r.get("x")) == bench.LABEL_W]
    tops = [float(b.get("y")) for b in bars]
    assert tops == sorted(tops) and all(b - a >= 2 * bench.BAR_H for a, b in itertools.pairwise(tops))
    assert float(svg.get("height")) >= tops[-1] + 2 * bench.BAR_H
