"""Pack tokenized examples into fixed-length training rows with per-document position ids.

Every row is exactly `seq_len` tokens. Documents are placed first-fit into a small window of
open rows (in arrival order, so the stream stays lazy and deterministic); a document longer
than `seq_len` is cut into `seq_len` pieces, each its own document. The unused tail of a row
is padding, itself a "document" (positions restart at 0, labels -100), so attention never
mixes it with real tokens.

Document-boundary convention (the loss shifts labels left by one, see loss.py):
    labels[first token of every document] = -100.
After the shift the last token of document k would otherwise be trained to predict the first
token of document k + 1, an association that does not exist in the data. Nothing is lost: in
an unpacked row the first token is never a target either (no position precedes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from gpu_runtime.formats import IGNORE_INDEX, TokenizedExample


@dataclass
class PackedSequence:
    input_ids: torch.LongTensor  # [L]
    labels: torch.LongTensor  # [L], IGNORE_INDEX where no loss (incl. each document's first token)
    position_ids: torch.LongTensor  # [L], restarting at 0 at each document (and at the padding)
    num_documents: int  # real documents (pieces), padding not counted
    num_real_tokens: int  # L minus padding

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class PackingStats:
    sequences: int
    real_tokens: int
    padded_tokens: int
    efficiency: float  # real_tokens / (sequences · seq_len); 1.0 is perfect packing


@dataclass
class _OpenRow:
    pieces: list[TokenizedExample] = field(default_factory=list)
    used: int = 0


def _split(example: TokenizedExample, seq_len: int) -> list[TokenizedExample]:
    """Cut a document into pieces of at most seq_len tokens (each becomes its own document)."""
    return [
        TokenizedExample(
            input_ids=example.input_ids[i : i + seq_len], labels=example.labels[i : i + seq_len]
        )
        for i in range(0, len(example), seq_len)
    ]


def _materialise(row: _OpenRow, seq_len: int, pad_token_id: int) -> PackedSequence:
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for piece in row.pieces:
        input_ids.extend(piece.input_ids)
        labels.append(IGNORE_INDEX)  # boundary convention: see module docstring
        labels.extend(piece.labels[1:])
        positions.extend(range(len(piece)))
    padding = seq_len - row.used
    input_ids.extend([pad_token_id] * padding)
    labels.extend([IGNORE_INDEX] * padding)
    positions.extend(range(padding))
    return PackedSequence(
        input_ids=torch.tensor(input_ids, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long),
        num_documents=len(row.pieces),
        num_real_tokens=row.used,
    )


def pack_examples(
    examples: Iterable[TokenizedExample],
    seq_len: int,
    *,
    pad_token_id: int,
    max_open_rows: int = 8,
) -> Iterator[PackedSequence]:
    """Yield rows of exactly `seq_len` tokens, packing as many documents per row as fit.

    First-fit over at most `max_open_rows` partially filled rows: a piece goes into the first
    open row with room; a full row is emitted at once; when a new row is needed and the window
    is full, the oldest open row is emitted (padded). max_open_rows=1 is plain greedy packing.
    """
    if seq_len < 2:
        raise ValueError("seq_len must be at least 2")
    if max_open_rows < 1:
        raise ValueError("max_open_rows must be at least 1")
    open_rows: list[_OpenRow] = []
    for example in examples:
        if len(example) == 0:
            continue
        for piece in _split(example, seq_len):
            row = next((r for r in open_rows if r.used + len(piece) <= seq_len), None)
            if row is None:
                if len(open_rows) == max_open_rows:
                    yield _materialise(open_rows.pop(0), seq_len, pad_token_id)
                row = _OpenRow()
                open_rows.append(row)
            row.pieces.append(piece)
            row.used += len(piece)
            if row.used == seq_len:
                open_rows.remove(row)
                yield _materialise(row, seq_len, pad_token_id)
    for row in open_rows:
        yield _materialise(row, seq_len, pad_token_id)


def packing_stats(seqs: Sequence[PackedSequence]) -> PackingStats:
    total = sum(len(s) for s in seqs)
    real = sum(s.num_real_tokens for s in seqs)
    return PackingStats(
        sequences=len(seqs),
        real_tokens=real,
        padded_tokens=total - real,
        efficiency=real / total if total else 0.0,
    )
