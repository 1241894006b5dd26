"""Stop strings across token boundaries and incremental detokenization (no model needed)."""

from __future__ import annotations

from gpu_runtime.serving.text_stream import IncrementalDetokenizer, StopStringBuffer


def _feed_all(buffer: StopStringBuffer, pieces: list[str]) -> tuple[list[str], str]:
    released = [buffer.feed(piece) for piece in pieces]
    return released, "".join(released) + ("" if buffer.stopped else buffer.flush())


def test_stop_split_over_pieces_is_cut_and_never_half_streamed():
    buffer = StopStringBuffer(["END"])
    released, text = _feed_all(buffer, ["hello E", "N", "D tail"])
    assert buffer.stopped and text == "hello "
    assert released == ["hello ", "", ""]  # "E" and "EN" were held back, not streamed


def test_held_back_prefix_is_released_when_it_stops_matching():
    buffer = StopStringBuffer(["END"])
    released, text = _feed_all(buffer, ["a E", "NX", "b"])
    assert not buffer.stopped and text == "a ENXb"
    assert released == ["a ", "ENX", "b"]


def test_earliest_of_several_stops_wins_and_flush_returns_the_rest():
    buffer = StopStringBuffer(["\n\n", "xyz"])
    _, text = _feed_all(buffer, ["one xy", "z two\n", "\nthree"])
    assert text == "one " and buffer.text == "one "
    no_stop = StopStringBuffer([])
    _, text = _feed_all(no_stop, ["plain ", "text"])
    assert text == "plain text"


def test_detokenizer_streams_exactly_the_decoded_text(tokenizer):
    text = "Garden music, 1234 quick! Ünïcödé ✓ and 漢字"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    prompt = tokenizer("The prompt", add_special_tokens=True).input_ids
    detok = IncrementalDetokenizer(tokenizer, prompt)
    pieces = [detok.push(token) for token in ids]
    assert "".join(pieces) + detok.flush() == tokenizer.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)  # split characters are held back
