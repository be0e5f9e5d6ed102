"""Parent-section retrieval: search matches small chunks, and each hit is widened to the
section that encloses it (`search --expand section`).

Small chunks embed one idea each, so they match a question sharply; a passage handed to a
reader (a person, or the generator in `ask`) is more useful with its surroundings. A section
is the run of consecutive chunks of one document that share a heading path, which is what
the chunker cuts at. A long section is cut to `max_chars` around the matched chunk, growing
to whichever neighbour is nearer, so the match is always inside. Hits in the same section
collapse into the first (best ranked) one.
"""

from __future__ import annotations

from dataclasses import replace

EXPANSIONS = ("chunk", "section")
SECTION_CHARS = 4000     # about 1,000 tokens: four of them still fit a 4k-token prompt


def _section_rows(db, chunk_id: int) -> tuple[list[tuple], int]:
    """The chunks of the section around `chunk_id`, in order, and the matched one's place.
    Rows are (id, seq, text, start_char, end_char, start_line, end_line)."""
    doc_id, heading = db.execute("select document_id, heading from chunks where id = ?",
                                 [chunk_id]).fetchone()
    rows = db.execute("select id, seq, text, start_char, end_char, start_line, end_line, "
                      "heading from chunks where document_id = ? order by seq",
                      [doc_id]).fetchall()
    at = next(i for i, r in enumerate(rows) if r[0] == chunk_id)
    lo = at
    while lo > 0 and rows[lo - 1][7] == heading:
        lo -= 1
    hi = at
    while hi + 1 < len(rows) and rows[hi + 1][7] == heading:
        hi += 1
    return [r[:7] for r in rows[lo:hi + 1]], at - lo


def _window(rows: list[tuple], at: int, max_chars: int) -> list[tuple]:
    """The matched chunk and its nearest neighbours while they fit in `max_chars`."""
    lo = hi = at
    size = len(rows[at][2])
    while True:
        before = len(rows[lo - 1][2]) if lo > 0 else None
        after = len(rows[hi + 1][2]) if hi + 1 < len(rows) else None
        # the nearer neighbour first: alternate by taking the side that has grown less
        take_before = before is not None and (after is None or at - lo <= hi - at)
        grow = before if take_before else after
        if grow is None or size + grow > max_chars:
            return rows[lo:hi + 1]
        size += grow
        lo, hi = (lo - 1, hi) if take_before else (lo, hi + 1)


def join_chunks(rows: list[tuple]) -> str:
    """Consecutive chunks as one text: a chunk that repeats the end of the one before it
    (the chunker's overlap) contributes only what is new. The whitespace the chunker cut at
    is not stored; the line numbers tell it: a space within a line, a line break to the
    next line, a blank line between paragraphs."""
    parts: list[str] = []
    end = last_line = None
    for _id, _seq, text, start, stop, start_line, end_line in rows:
        if end is not None and start is not None and start < end:
            text = text[end - start:]
        elif parts:
            gap = (start_line or 0) - (last_line or 0)
            parts.append(" " if gap <= 0 else "\n" if gap == 1 else "\n\n")
        parts.append(text)
        end = stop if end is None or stop is None else max(end, stop)
        last_line = end_line
    return "".join(parts)


def expand_to_sections(db, hits: list, max_chars: int = SECTION_CHARS,
                       limit: int | None = None) -> list:
    """Each hit widened to its section (or the part of it around the match that fits
    `max_chars`); later hits inside a section already returned are dropped. Stops after
    `limit` sections."""
    out, seen = [], set()
    for hit in hits:
        if limit is not None and len(out) >= limit:
            break
        if hit.chunk_id in seen:
            continue
        rows, at = _section_rows(db, hit.chunk_id)
        seen.update(r[0] for r in rows)
        kept = _window(rows, at, max_chars)
        out.append(replace(hit, text=join_chunks(kept), start_line=kept[0][5],
                           end_line=kept[-1][6]))
    return out


__all__ = ["EXPANSIONS", "SECTION_CHARS", "expand_to_sections", "join_chunks"]
