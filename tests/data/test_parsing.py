"""Any bytes given as a file are read without crashing, and every line is
accounted for; small files (plain Python) and large ones (NumPy and the C
parser) judge every line the same way. Property-based (hypothesis)."""

import pytest
from helpers import read_fields
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forecaster.data import reading
from forecaster.data.parsing import decode, parse_header, read_many, split_header
from forecaster.data.rules import validate
from forecaster.errors import UnreadableFileError

FUZZ = settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
HEADER = "Date,Open,High,Low,Close,Volume,OpenInt"


def non_blank_lines(body: str) -> int:
    return sum(1 for line in body.split("\n") if line.rstrip("\r").strip())


@FUZZ
@given(st.binary(max_size=3000))
@example(b"Date,Open,High,Low,Close\n\r\n2017-01-03,1,1,1,1\r")
@example(b"\xef\xbb\xbfDate,Open,High,Low,Close\n2017-01-03,\xef\xbc\x91,1,1,1\n")
def test_fuzz_arbitrary_bytes_never_crash_and_the_accounting_adds_up(data):
    import io

    try:  # a file complete as it is: its unterminated last line is read too
        body = reading._read_whole(io.BytesIO(data), len(data), header_complete=True).body(len(data))
    except UnreadableFileError:
        return  # reported and recorded as a whole-file problem
    parsed = validate(read_many([body]))[0]
    body = split_header(decode(data))[1]
    assert parsed.n_read == non_blank_lines(body)


field = st.one_of(
    st.sampled_from(
        [
            "",
            "1",
            "10.5",
            "0",
            "-3",
            "nan",
            "inf",
            "1e400",
            "abc",
            "１２",
            "1_0",
            " 7 ",
            "2017-01-03",
            "2017-02-30",
            "2099-01-01",
            "17-1-3",
            '"5"',
            "\r",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)
row = st.lists(field, min_size=3, max_size=9).map(",".join)
dated_row = st.tuples(st.dates().map(lambda d: d.isoformat()), st.lists(field, min_size=4, max_size=7)).map(
    lambda t: ",".join([t[0], *t[1]])
)


@pytest.mark.slow
@FUZZ
@given(st.lists(st.one_of(row, dated_row), max_size=25))
@example(["2017-01-03,１２,13,11,12,5,0"])
@example(["2017-01-03,1,1,1,1,1,0\r2017-01-04,1,1,1,1,1,0"])
def test_fuzz_csv_shaped_lines_judged_the_same_in_small_and_large_files(lines):
    header = parse_header(HEADER)
    small_body = "\n".join(lines) + "\n"
    small = validate([read_fields(small_body, header, first_line=2)])[0]
    assert small.n_read == non_blank_lines(small_body)
    # The same lines after 300 clean rows from 1700: a body large enough for the C-parser path.
    import pandas as pd

    padding = [f"{d:%Y-%m-%d},1,1,1,1,1,0" for d in pd.bdate_range("1700-01-01", periods=300)]
    large_body = "\n".join(padding + lines) + "\n"
    large = validate([read_fields(large_body, header, first_line=2)])[0]
    assert large.n_read == non_blank_lines(large_body)
    shift = len(padding)
    assert [(r.line - shift, r.reason) for r in large.rejects] == [(r.line, r.reason) for r in small.rejects]
    tail = large.rows.lines > shift + 1

    def by_line(rows, sel=slice(None)):
        return sorted(zip(rows.lines[sel].tolist(), map(tuple, rows.values[sel].tolist()), strict=True))

    got = [(line - shift, v) for line, v in by_line(large.rows, tail)]
    assert repr(got) == repr(by_line(small.rows))  # repr: NaN volumes compare equal
