"""Board lots beside the bars: ``lots.csv`` (``code,lot_size``) in a replay's data folder.

Bar files carry no board lot; a folder may say them in ``lots.csv`` (``--download`` writes one
from the broker's static info). Any spelling of a code is accepted (``700``, ``HK.00700``).
"""
from __future__ import annotations

import csv
from pathlib import Path

from data.bars import LOTS_FILE, BarFileError
from core.instruments import Symbol, SymbolError, parse_symbol


def lots_beside(path: Path) -> dict[Symbol, int]:
    """The lots of ``lots.csv`` in the folder ``path`` (or beside the file ``path``); none without one."""
    folder = path if path.is_dir() else path.parent
    found = [p for p in folder.glob("*.csv") if p.name.lower() == LOTS_FILE]
    return read_lots(found[0]) if found else {}


def read_lots(path: Path) -> dict[Symbol, int]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header[:2] != ["code", "lot_size"]:
        raise BarFileError(f"{path}: expected the header code,lot_size; found {','.join(header) or 'nothing'}")
    lots: dict[Symbol, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            symbol = parse_symbol(row[0])
            lot = int(row[1])
            if lot < 1:
                raise ValueError
        except SymbolError as e:
            raise BarFileError(f"{path}: row {n}: {e}") from e
        except (ValueError, IndexError):
            raise BarFileError(f"{path}: row {n}: lot_size {row[1] if len(row) > 1 else ''!r} is not a whole number "
                               "of shares >= 1") from None
        lots[symbol] = lot
    return lots


def write_lots(path: Path, lots: dict[Symbol, int]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["code", "lot_size"])
        for symbol, lot in sorted(lots.items()):
            w.writerow([symbol.short, lot])
