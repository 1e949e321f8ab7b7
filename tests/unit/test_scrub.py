"""StreamScrubber: secrets out of a byte stream, even when a read splits one, without holding ordinary text."""

from __future__ import annotations

import pytest

from mcp_reconcile.scrub import StreamScrubber

SECRET = "hunter2-secret"


def run_through(scrubber: StreamScrubber, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    written = [scrubber.feed(chunk) for chunk in chunks]
    return written, b"".join(written) + scrubber.flush()


@pytest.mark.parametrize("split", range(1, len(SECRET)))
def test_a_secret_split_across_two_reads_is_still_scrubbed(split: int) -> None:
    line = f"key={SECRET}\n".encode()
    cut = len("key=") + split
    _, out = run_through(StreamScrubber([SECRET]), [line[:cut], line[cut:]])
    assert out == b"key=(sensitive)\n"


def test_ordinary_text_is_written_at_once_and_only_a_possible_secret_start_is_held() -> None:
    scrubber = StreamScrubber([SECRET])
    assert scrubber.feed(b"ready\n") == b"ready\n"
    assert scrubber.feed(b"token hunt") == b"token "       # "hunt" may begin the secret
    assert scrubber.feed(b"ing season\n") == b"hunting season\n"
    assert scrubber.flush() == b""


def test_the_longest_of_overlapping_secrets_wins_and_short_values_are_left_alone() -> None:
    _, out = run_through(StreamScrubber(["abc", "abcdef", "xy"]), [b"abcdef abc xy\n"])
    assert out == b"(sensitive) (sensitive) xy\n"


def test_a_held_tail_is_written_at_the_end_of_the_stream() -> None:
    written, out = run_through(StreamScrubber([SECRET]), [b"last words: hunter"])
    assert written == [b"last words: "] and out == b"last words: hunter"
