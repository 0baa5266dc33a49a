import random

from providers.sse import SSEDecoder, SSEEvent

STREAM = (b": keep-alive\r\n\r\n"
          b"data: {\"a\": 1}\n\n"
          b"event: message_delta\r\ndata: line one\r\ndata: line two\r\n\r\n"
          + "data: caf\u00e9 \u2603\n\n".encode()
          + b"data:no-space\r\r"
          + b"data: [DONE]\n\n")
EXPECTED = [SSEEvent('{"a": 1}'), SSEEvent("line one\nline two", "message_delta"),
            SSEEvent("caf\u00e9 \u2603"), SSEEvent("no-space"), SSEEvent("[DONE]")]


def test_whole_stream() -> None:
    assert SSEDecoder().feed(STREAM) == EXPECTED


def test_split_at_every_byte_boundary() -> None:
    for cut in range(1, len(STREAM)):
        decoder = SSEDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == EXPECTED, cut


def test_random_awkward_pieces() -> None:
    rng = random.Random(7)
    for _ in range(200):
        decoder, events, position = SSEDecoder(), [], 0
        while position < len(STREAM):
            size = rng.randint(1, 5)
            events += decoder.feed(STREAM[position:position + size])
            position += size
        assert events == EXPECTED


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert SSEDecoder().feed(b"\n\n\r\n: comment\n\n") == []


LF_STREAM = STREAM.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def test_lf_only_stream_split_at_every_byte_boundary() -> None:
    # the decoder's LF-only fast path (what model APIs send), chunk by chunk
    assert SSEDecoder().feed(LF_STREAM) == EXPECTED
    for cut in range(1, len(LF_STREAM)):
        decoder = SSEDecoder()
        assert decoder.feed(LF_STREAM[:cut]) + decoder.feed(LF_STREAM[cut:]) == EXPECTED, cut


def test_lf_chunks_then_a_cr_chunk() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: e\ndata: one\ndata: tw") == []
    assert decoder.feed(b"o\r\n\r\ndata: x\n\n") == [SSEEvent("one\ntwo", "e"), SSEEvent("x")]
