"""The one lookup from an identifier to its position: product ids to product codes, dates to
day numbers.

``IdLookup.of(ids)`` prepares it once for a table of ids (in any order); ``codes`` and
``positions`` then answer for any number of values. Integer ids spanning a range not much
wider than their number use a table indexed by ``id - lowest`` (one memory read a value);
other integers a binary search; text a join.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

# Values looked up at a time in a table (bounds the temporaries to this many rows).
CHUNK_ROWS = 4_000_000


@dataclasses.dataclass(frozen=True, eq=False)
class IdLookup:
    """Product code (position in ``ids``, in any order) of any id.

    Integer ids spanning a range not much wider than their number use a table indexed by
    ``id - lowest`` (one memory read per row); other integers a binary search; text ids a
    join.
    """

    ids: pl.Series
    table: np.ndarray | None = None
    lowest: int = 0
    # Integer ids without a table: the order that sorts them (for a binary search).
    order: np.ndarray | None = None

    # The table may be this many times wider than the number of ids.
    MAX_SPREAD = 8

    @classmethod
    def of(cls, ids: pl.Series) -> IdLookup:
        if not ids.dtype.is_integer() or len(ids) == 0:
            return cls(ids)
        values = ids.to_numpy()
        lowest, highest = int(values.min()), int(values.max())
        if highest - lowest + 1 > cls.MAX_SPREAD * max(len(values), 1 << 16):
            return cls(ids, order=np.argsort(values, kind="stable"))
        table = np.full(highest - lowest + 1, -1, dtype=np.int64)
        table[values - lowest] = np.arange(len(values))
        return cls(ids, table, lowest)

    def codes(self, ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(codes of the known ids, which ids are known)."""
        if self.table is not None:
            offset = ids.to_numpy() - self.lowest
            if len(offset) and offset.min() >= 0 and offset.max() < len(self.table):
                code = self.table[offset]
                known = code >= 0
            else:
                inside = (offset >= 0) & (offset < len(self.table))
                code = self.table[np.where(inside, offset, 0)]
                known = inside & (code >= 0)
            return (code if known.all() else code[known]), known
        if self.ids.dtype.is_integer():
            order = self.order if self.order is not None else np.argsort(self.ids.to_numpy(), kind="stable")
            sorted_ids = self.ids.to_numpy()[order]
            values = ids.to_numpy()
            pos = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
            known = sorted_ids[pos] == values
            code = order[pos]
            return (code if known.all() else code[known]).astype(np.int64), known
        frame = pl.DataFrame({"product_id": ids})
        lookup = pl.DataFrame({"product_id": self.ids, "_code": np.arange(len(self.ids))})
        code = frame.join(lookup, on="product_id", how="left", maintain_order="left")["_code"]
        known = code.is_not_null().to_numpy()
        return code.drop_nulls().to_numpy().astype(np.int64), known

    def positions(self, values: pl.Series, dtype: type = np.int64) -> np.ndarray:
        """Position of each value in the ids, -1 where it is not one of them (a missing value
        included); a table is read a slice of values at a time."""
        if self.table is not None and not values.null_count():
            out: np.ndarray = np.empty(len(values), dtype=dtype)
            for start in range(0, len(values), CHUNK_ROWS):
                offset = values.slice(start, CHUNK_ROWS).to_numpy().astype(np.int64, copy=False) - self.lowest
                inside = (offset >= 0) & (offset < len(self.table))
                found = self.table[np.where(inside, offset, 0)]
                out[start : start + len(offset)] = np.where(inside, found, -1)
            return out
        if self.ids.dtype.is_integer() and not values.null_count():
            code, known = self.codes(values)
        else:
            frame = pl.DataFrame({"product_id": values})
            lookup = pl.DataFrame({"product_id": self.ids, "_code": np.arange(len(self.ids))})
            joined = frame.join(lookup, on="product_id", how="left", maintain_order="left")["_code"]
            return joined.fill_null(-1).to_numpy().astype(dtype)
        out = np.full(len(values), -1, dtype=dtype)
        out[known] = code
        return out


def row_positions(values: pl.Series, ids: pl.Series, dtype: type = np.int64) -> np.ndarray:
    """Position of each value in ``ids`` (-1 when absent). Integers of any width compare as
    numbers; when either side holds text, both are compared as text (``"042"`` is not 42)."""
    if not (values.dtype.is_integer() and ids.dtype.is_integer()) and values.dtype != ids.dtype:
        values, ids = values.cast(pl.String), ids.cast(pl.String)
    return IdLookup.of(ids).positions(values, dtype)
