"""The SSE decoder against the spec's edge cases, fed whole, per byte offset and per byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tgi.protocol.sse import SSEDecoder, SSEEvent, aiter_sse, encode_sse

TGI_STREAM = (
    b'data: {"index":1,"token":{"id":13347,"text":"Hi","logprob":-0.0625,"special":false},'
    b'"generated_text":null,"details":null}\n\n'
    b":\n\n"
    b'data: {"index":2,"token":{"id":128009,"text":"<|eot_id|>","logprob":-0.00390625,"special":true},'
    b'"generated_text":"Hi\xc3\xa9","details":null}\n\n'
)


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.close()
    return events


def splits(data: bytes):
    """Every way of cutting ``data`` in two, then one byte at a time."""
    yield [data]
    for offset in range(len(data) + 1):
        yield [data[:offset], data[offset:]]
    yield [data[i : i + 1] for i in range(len(data))]


def test_tgi_stream_at_every_split():
    expected = decode_all([TGI_STREAM])
    assert [e.data[:10] for e in expected] == ['{"index":1', '{"index":2']
    assert '"Hié"' in expected[1].data
    for chunks in splits(TGI_STREAM):
        assert decode_all(chunks) == expected


@pytest.mark.parametrize(
    "raw, data",
    [
        (b"data: x\n\n", ["x"]),
        (b"data:x\n\n", ["x"]),  # TGI <= 2.0 framing
        (b"data:  x\n\n", [" x"]),  # only ONE space is dropped
        (b"data\n\n", [""]),  # no colon: field name only, empty value
        (b"data:\n\n", [""]),
        (b"data: a\ndata: b\n\n", ["a\nb"]),  # lines of one event joined with \n
        (b"data: a\r\ndata: b\r\n\r\n", ["a\nb"]),  # CRLF
        (b"data: a\rdata: b\r\r", ["a\nb"]),  # CR alone
        (b"data: a\r\n\r\ndata: b\n\r\n", ["a", "b"]),  # mixed
        (b": keep-alive\n\ndata: x\n\n", ["x"]),  # comments
        (b":\n\n:\n\n", []),  # TGI keep-alives alone dispatch nothing
        (b"event: ping\n\n", []),  # no data: no event
        (b"data: x\n", []),  # no blank line before the end: discarded
        (b"data: x", []),
        (b"\xef\xbb\xbfdata: x\n\n", ["x"]),  # BOM at the start
        (b"data: a:b: c\n\n", ["a:b: c"]),  # split on the FIRST colon only
        (b"dat: x\ndata: y\n\n", ["y"]),  # unknown field ignored
        (b"data: \xff\n\n", ["\ufffd"]),  # bad UTF-8 is replaced, not fatal
    ],
)
def test_spec_cases(raw, data):
    for chunks in splits(raw):
        assert [e.data for e in decode_all(chunks)] == data


def test_event_id_and_retry_fields():
    events = decode_all([b"event: update\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\n"])
    assert events[0] == SSEEvent("x", "update", "7", 1500)
    assert events[1] == SSEEvent("y", "message", "7", 1500)  # the last id persists


def test_comments_are_counted_and_nothing_is_stripped_like_lstrip():
    decoder = SSEDecoder()
    events = decoder.feed(b':\n\ndata: data: {"a":1}\n\n')
    assert decoder.comments == 1
    assert events[0].data == 'data: {"a":1}'  # lstrip("data:") would eat into the value


def test_crlf_split_between_chunks_makes_one_line_end():
    assert [e.data for e in decode_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])] == ["a\nb"]
    assert [e.data for e in decode_all([b"data: a\r", b"", b"\n\r\n"])] == ["a"]


def test_pending_tells_a_cut_event():
    decoder = SSEDecoder()
    decoder.feed(b'data: {"index":1')
    assert decoder.pending
    decoder.feed(b"}\n\n")
    assert not decoder.pending


async def test_aiter_sse():
    async def chunks():
        for i in range(0, len(TGI_STREAM), 7):
            yield TGI_STREAM[i : i + 7]

    assert [e.data async for e in aiter_sse(chunks())] == [e.data for e in decode_all([TGI_STREAM])]


def test_encode_sse():
    assert encode_sse('{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_sse(b"[DONE]") == b"data: [DONE]\n\n"
    assert encode_sse("é") == "data: é\n\n".encode()
    assert encode_sse("a\nb") == b"data: a\ndata: b\n\n"
    assert encode_sse(" x") == b"data:  x\n\n"


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20), max_size=5),
       st.data())
def test_encode_then_decode_round_trips(values, data):
    stream = b"".join(encode_sse(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    expected = [v.replace("\r\n", "\n").replace("\r", "\n") for v in values]
    assert [e.data for e in decode_all(chunks)] == expected
