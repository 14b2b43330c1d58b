import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from helpers import fields_fast, parse_rows, read_fields

from forecaster.data.discovery import ticker_from_path
from forecaster.data.parsing import parse_header, split_header
from forecaster.errors import UnreadableFileError

HEADER = "Date,Open,High,Low,Close,Volume,OpenInt"
TODAY = dt.date(2020, 1, 1)


def parse(lines: list[str], header: str = HEADER):
    parsed = parse_rows("\n".join(lines) + "\n", parse_header(header), first_line=2, today=TODAY)
    assert parsed.n_read == sum(1 for line in lines if line.strip())  # accounting adds up
    return parsed


def only_reason(lines):
    parsed = parse(lines)
    assert len(parsed.rejects) == 1, parsed.rejects
    return parsed.rejects[0]


GOOD = "2017-01-03,10,11,9,10.5,100,0"


RULES = [
    ("2017-01-04,,11,9,10.5,100,0", "missing open"),
    ("2017-01-04,abc,11,9,10.5,100,0", "non-numeric open 'abc'"),
    ("2017-01-04,10,11,9,inf,100,0", "close is not finite (inf)"),
    ("2017-01-04,10,11,9,nan,100,0", "close is not finite (nan)"),
    ("2017-01-04,0,11,9,10.5,100,0", "open is not positive (0)"),
    ("2017-01-04,10,11,9,-1,100,0", "close is not positive (-1)"),
    ("2017-01-04,10,8,9,8.5,100,0", "high 8 is below low 9"),
    ("2017-01-04,10,10.2,9,10.5,100,0", "high 10.2 is below open/close 10.5"),
    ("2017-01-04,10,11,10.2,10.5,100,0", "low 10.2 is above open/close 10"),
    ("2017-02-30,10,11,9,10.5,100,0", "impossible or unrecognised date '2017-02-30' (expected YYYY-MM-DD)"),
    ("01/04/2017,10,11,9,10.5,100,0", "impossible or unrecognised date '01/04/2017' (expected YYYY-MM-DD)"),
    ("2017-01-04,10,11,9,10.5,lots,0", "non-numeric volume 'lots'"),
    ("2017-01-04,10,11,9,10.5,-5,0", "volume is negative (-5)"),
    ("2017-01-04,10,11,9", "expected 7 fields, found 4"),
]


@pytest.mark.parametrize("row, reason", RULES)
def test_each_rule_sets_the_row_aside_with_its_reason(row, reason):
    rejection = only_reason([GOOD, row])
    assert rejection.reason == reason
    assert rejection.line == 3 and rejection.raw == row


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_row_dated_after_today_waits_instead_of_being_set_aside(size):
    later, mis_dated = "2020-01-03,10,11,9,10.5,100,0", "2021-01-04,10,11,9,10.5,100,0"
    lines = (many_good_rows() if size == "large" else [GOOD]) + [later, mis_dated]
    parsed = parse(lines)
    assert [(r.line, r.raw, r.reason) for r in parsed.waiting] == [
        (len(lines), later, "dated 2020-01-03, after the exchange's current day 2020-01-01")
    ]
    # Beyond a few days it is no clock's lag but a mis-dated row: set aside, not re-read every night.
    assert [(r.line, r.reason) for r in parsed.rejects] == [
        (len(lines) + 1, "date 2021-01-04 is more than 3 days after the exchange's current day 2020-01-01")
    ]
    assert len(parsed.rows) == len(lines) - 2
    # A bad row dated after today is set aside for what is wrong with it, for good.
    bad_and_later = parse([GOOD, "2021-01-04,10,11,9,-1,100,0"])
    assert [r.reason for r in bad_and_later.rejects] == ["close is not positive (-1)"] and not bad_and_later.waiting


def many_good_rows(n=300):
    """Distinct valid 2015 dates: enough bytes for the C-parser fast path."""
    import pandas as pd

    return [f"{d:%Y-%m-%d},10,11,9,10.5,100,0" for d in pd.bdate_range("2015-01-01", periods=n)]


@pytest.mark.parametrize("row, reason", RULES)
def test_each_rule_gives_the_same_reason_inside_a_large_file(row, reason):
    lines = many_good_rows() + [row]
    parsed = parse(lines)
    assert [(r.line, r.reason, r.raw) for r in parsed.rejects] == [(len(lines) + 1, reason, row)]
    assert len(parsed.rows) == 300


def test_a_large_clean_file_parses_like_a_small_one():
    lines = many_good_rows()
    big = parse(lines)
    small = [parse([line]) for line in lines[:5]]
    assert big.rows.dates[:5].tolist() == [p.rows.dates[0] for p in small]
    np.testing.assert_array_equal(big.rows.values[:5], np.vstack([p.rows.values for p in small]))
    assert big.rows.lines[:5].tolist() == [2, 3, 4, 5, 6]


def test_zero_volume_and_empty_volume_are_valid():
    parsed = parse([GOOD, "2017-01-04,10,11,9,10.5,0,0", "2017-01-05,10,11,9,10.5,,0"])
    assert not parsed.rejects and len(parsed.rows) == 3


def test_same_date_with_different_values_sets_all_its_lines_aside():
    parsed = parse([GOOD, "2017-01-04,10,11,9,10,1,0", "2017-01-03,10,11,9,10.6,100,0"])
    assert [r.line for r in parsed.rejects] == [2, 4]
    assert all("appears on lines 2, 4 with different values" in r.reason for r in parsed.rejects)
    assert parsed.rows.dates.tolist() == ["2017-01-04"]


def test_an_identical_repeat_keeps_the_first_line():
    parsed = parse([GOOD, GOOD])
    assert parsed.rows.lines.tolist() == [2]
    assert parsed.rejects[0].reason == "repeats line 2 (2017-01-03)"


def test_rows_in_any_order_come_out_sorted():
    parsed = parse(["2017-01-05,10,11,9,10,1,0", GOOD, "2017-01-04,10,11,9,10,1,0"])
    assert parsed.rows.dates.tolist() == ["2017-01-03", "2017-01-04", "2017-01-05"]
    assert parsed.rows.lines.tolist() == [3, 4, 2]


@pytest.mark.parametrize(
    "header",
    [
        "date,open,high,low,close,volume,openint",
        "\ufeffDATE,OPEN,HIGH,LOW,CLOSE,VOLUME,OPENINT\r",
        ",Open,High,Low,Close,Volume,OpenInt",
        "Date,Open,High,Low,Close,Adj Close,Volume",
    ],
)
def test_vendor_headers(header):
    h = parse_header(header)
    assert h.positions["date"] == 0 and h.positions["close"] == 4
    assert not parse([GOOD], header).rejects


def test_volume_column_is_optional():
    parsed = parse(["2017-01-03,10,11,9,10.5"], "Date,Open,High,Low,Close")
    assert np.isnan(parsed.rows.values[:, 4]).all() and len(parsed.rows) == 1


def test_crlf_lines():
    first, body = split_header(HEADER + "\r\n" + GOOD + "\r\n")
    parsed = parse_rows(body, parse_header(first), first_line=2, today=TODAY)
    assert parsed.rows.values[:, 3].tolist() == [10.5]


@pytest.mark.parametrize(
    "header, missing",
    [
        ("Date,Open,High,Low,Volume", "Close"),
        ("Open,High,Low,Close", "Date"),
    ],
)
def test_header_without_a_needed_column_is_unreadable(header, missing):
    with pytest.raises(UnreadableFileError, match=f"header has no {missing} column"):
        parse_header(header)


def test_ticker_is_the_lowercased_name_up_to_the_first_dot():
    assert ticker_from_path(Path("x/Stocks/AAPL.us.txt")) == "aapl"
    with pytest.raises(UnreadableFileError):
        ticker_from_path(Path(".us.txt"))


def test_validating_many_files_at_once_equals_one_by_one():
    from forecaster.data.rules import validate

    bodies = [
        ([GOOD, "2017-01-04,10,11,9,10.5,100,0", "2017-01-04,10,11,9,10.6,100,0"], HEADER),
        ([GOOD, "2017-01-05,abc,11,9,10.5,100,0"], HEADER),  # same date as file 0: not a duplicate
        (["2017-01-03,10,11,9,10.5"], "Date,Open,High,Low,Close"),  # another layout, no volume
        ([], HEADER),
    ]
    fields = [read_fields("\n".join(lines) + "\n", parse_header(h), first_line=2) for lines, h in bodies]
    together = validate(fields, TODAY)
    alone = [validate([f], TODAY)[0] for f in fields]
    for a, b in zip(together, alone, strict=True):
        assert a.rows.dates.tolist() == b.rows.dates.tolist()
        np.testing.assert_array_equal(a.rows.values, b.rows.values)
        assert [(r.line, r.reason) for r in a.rejects] == [(r.line, r.reason) for r in b.rejects]
    assert [len(p.rows) for p in together] == [1, 1, 1, 0]
    assert [len(p.rejects) for p in together] == [2, 1, 0, 0]


# -- the two ways of reading a file agree -------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from forecaster.data.parsing import Body, _fields_by_line  # noqa: E402


def line_path(body, header, first_line=2):
    """One body read line by line (the path small and odd files take)."""
    return _fields_by_line([Body(body, header, first_line)])[0]


def assert_same_fields(fast, slow):
    assert fast.lines.tolist() == slow.lines.tolist()
    assert fast.date_text.tolist() == slow.date_text.tolist()
    np.testing.assert_array_equal(fast.values, slow.values)  # exact, NaN where NaN
    assert fast.width_ok.tolist() == slow.width_ok.tolist()
    assert [fast.raw_line(i) for i in range(len(fast))] == [slow.raw_line(i) for i in range(len(slow))]


@pytest.mark.parametrize(
    "header, row",
    [
        (HEADER, "{d},10.25,11,9,10.5,100,0"),
        ("Date,Open,High,Low,Close", "{d},10.25,11,9,10.5"),  # no volume column
        ("Open,High,Low,Close,Volume,Date", "10.25,11,9,10.5,100,{d}"),  # the date last
        (HEADER, "{d},10.25,11,9,10.5,,0"),  # empty volumes
        (HEADER, "{d},,11,9,10.5,100,0"),  # empty opens: read, judged later
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_the_fast_path_reads_clean_layouts_exactly_like_the_line_path(header, row, newline):
    dates = [line.split(",")[0] for line in many_good_rows()]
    body = newline.join(row.format(d=d) for d in dates) + newline
    fast = fields_fast(body, parse_header(header), 2)
    assert fast is not None, "a clean file must take the fast path"
    assert_same_fields(fast, line_path(body, parse_header(header)))


@pytest.mark.parametrize(
    "odd",
    [
        '"2015-06-01",10,11,9,10.5,100,0',  # quotes
        "",  # a blank line
        "2015-06-01,10,11,9,10.5,100,0\r2015-06-02,10,11,9,10.5,100,0",  # a lone CR
        "2015-6-1,10,11,9,10.5,100,0",  # a date that is not 10 characters
        "2015-06-01,10,11,9,10.5,100",  # a field short
        "2015-06-01,10,11,9,10.5,100,0,7",  # a field too many
        "2015-06-01,１０,11,9,10.5,100,0",  # not ASCII
        "2015-06-01,ten,11,9,10.5,100,0",  # text where a number belongs
    ],
)
def test_the_fast_path_leaves_odd_files_to_the_line_path(odd):
    body = "\n".join(many_good_rows() + [odd]) + "\n"
    assert fields_fast(body, parse_header(HEADER), 2) is None


decimal_text = st.one_of(
    st.floats(min_value=1e-6, max_value=1e12).map(repr),  # up to 17 digits, exponents
    st.decimals(min_value=0, max_value=10**9, places=4).map(str),
    st.integers(0, 10**15).map(str),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(*[decimal_text] * 5), min_size=1, max_size=50))
def test_the_fast_path_reads_every_number_exactly_as_python_does(numbers):
    # _fields_fast itself takes any size; read_fields sends it only large bodies.
    dates = [line.split(",")[0] for line in many_good_rows(len(numbers))]
    body = "".join(f"{d},{','.join(v)},0\n" for d, v in zip(dates, numbers, strict=True))
    fast = fields_fast(body, parse_header(HEADER), 2)
    assert fast is not None
    assert_same_fields(fast, line_path(body, parse_header(HEADER)))


def test_reading_many_bodies_at_once_equals_reading_each_alone():
    from forecaster.data.parsing import Body, read_many

    dates = [line.split(",")[0] for line in many_good_rows()]
    clean = "\n".join(f"{d},10.25,11,9,10.5,100,0" for d in dates) + "\n"
    bodies = [
        Body(clean, parse_header(HEADER), 2),
        Body("\n".join(f"{d},10.25,11,9,10.5" for d in dates), parse_header("Date,Open,High,Low,Close"), 2),
        Body(clean.replace("10.25", "ten", 1), parse_header(HEADER), 2),  # text for a number: line by line
        Body(clean.replace("\n", "\r\n"), parse_header(HEADER), 40),  # same layout, CRLF, a tail
        Body("2017-01-03,10,11,9,10.5,100,0\n", parse_header(HEADER), 7),  # small: line by line
        Body(clean.replace("100,0\n", "1e3,0\n"), parse_header(HEADER), 2),
        # Small bodies of two layouts, read line by line in one pass per layout:
        Body("2017-01-04,1,1.5,1,1\n\n2017-01-05,x,1,1,1\n", parse_header("Date,Open,High,Low,Close"), 3),
        Body("2017-01-04,2,2,2,2,,0\r\n2017-01-05,2,2\n", parse_header(HEADER), 9),
    ]
    together = read_many(bodies)
    for body, fields in zip(bodies, together, strict=True):
        assert_same_fields(fields, read_fields(body.text, body.header, first_line=body.first_line))
        assert_same_fields(fields, line_path(body.text, body.header, body.first_line))
    assert together[2].values[0, 0] != together[2].values[0, 0]  # "ten": NaN, judged later
    assert together[3].lines[0] == 40 and together[5].values[0, 4] == 1000
    # One odd file does not send the others of its layout line by line (the fast path keeps U10 dates).
    assert [f.date_text.dtype.kind for f in together] == ["U", "U", "O", "U", "O", "U", "O", "O"]
    assert together[6].lines.tolist() == [3, 5] and together[7].width_ok.tolist() == [True, False]
