"""The data cards state what the commands measure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lungsound.data.database import open_database
from lungsound.data.labels import CLASSES
from lungsound.data.stats import database_stats

CARDS = Path(__file__).resolve().parents[1] / "data_cards"


def table_rows(text: str, header_start: str) -> dict[str, list[str]]:
    """Rows of the Markdown table whose header line starts with `header_start`, keyed by their first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.needs_shared
def test_icbhi_card_matches_data_stats(icbhi_dir):
    db = open_database(icbhi_dir)
    stats = database_stats(db)
    text = (CARDS / "icbhi_2017.md").read_text()
    classes = table_rows(text, "| split | recordings | cycles |")
    devices = table_rows(text, "| split | Meditron |")
    for split in ("train", "test"):
        expected = [stats[split][k] for k in ("recordings", "cycles", *CLASSES, "patients")]
        assert [int(v) for v in classes[split]] == expected, split
        assert [int(v) for v in devices[split]] == [stats[split]["devices"][d] for d in db.devices], split
    both = re.search(r"patients (\d+) and (\d+) appear in both splits", text)
    assert [int(both.group(1)), int(both.group(2))] == stats["patients_in_both_splits"]


def test_cards_exist_and_their_pictures_too():
    for name in ("icbhi_2017.md", "synthetic.md", "kauh.md"):
        text = (CARDS / name).read_text()
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
            assert (CARDS / image).stat().st_size > 10_000, image
    assert "img/synthetic_examples.png" in (CARDS / "synthetic.md").read_text()


@pytest.mark.needs_shared
def test_icbhi_card_split_table_matches_data_stats(icbhi_dir):
    """The card's cycle counts of official_noleak and of each device_out fold are what `data stats --split` gives."""
    text = (CARDS / "icbhi_2017.md").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| split name | side |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = [int(v) for v in cells[2:]]
    names = ["official_noleak"] + [f"device_out={d}" for d in open_database(icbhi_dir, split=None).devices]
    assert sorted(rows) == sorted((n, side) for n in names for side in ("train", "test"))
    for name in names:
        stats = database_stats(open_database(icbhi_dir, split=name))
        for side in ("train", "test"):
            expected = [stats[side][k] for k in ("recordings", "cycles", *CLASSES, "patients")]
            assert rows[(name, side)] == expected, (name, side)
