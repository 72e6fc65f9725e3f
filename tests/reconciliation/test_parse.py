"""Strict parsing of settlement reports: exact decimals, one batch, a total per currency;
anything else is refused with ``invalid_report`` and the line it is on."""

from __future__ import annotations

import pytest

from paycore.reconciliation.parse import COLUMNS, ReportError, parse_report

HEAD = ",".join(COLUMNS)
B = "b-1,2026-12-07,2026-12-08"


def _report(*rows: str) -> str:
    return "\n".join((HEAD, *rows)) + "\n"


GOOD = _report(
    f"line,{B},capture,p1.a1,x1,EUR,,10.00,0.39,9.61",
    f"line,{B},refund,r1.r1,x2,EUR,,5.00,0.00,-5.00",
    f"line,{B},capture,p2.a1,x3,JPY,,1200,12,1188",
    f"line,{B},chargeback,p1.a1,x1,EUR,,10.00,15.00,-25.00",
    f"total,{B},,,,EUR,3,-5.00,15.39,-20.39",
    f"total,{B},,,,JPY,1,1200,12,1188",
)


def test_a_good_report_parses_to_integers_in_minor_units() -> None:
    """Amounts become exact integers by the currency's exponent (EUR 2, JPY 0)."""
    report = parse_report(GOOD)
    assert report.batch_id == "b-1"
    assert [(x.type, x.gross, x.fee, x.net) for x in report.lines] == [
        ("capture", 1000, 39, 961),
        ("refund", 500, 0, -500),
        ("capture", 1200, 12, 1188),
        ("chargeback", 1000, 1500, -2500),
    ]
    assert report.totals["EUR"].net == -2039
    assert report.totals["JPY"].count == 1
    assert [x.line_no for x in report.lines] == [2, 3, 4, 5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the report is empty"),
        ("a,b\n", "line 1: the header must be"),
        (_report(), "the report has no rows"),
        (_report(f"line,{B},capture,p1,x,EUR,,10.0,0.39,9.61"), "line 2: amount '10.0'"),
        (_report(f"line,{B},capture,p1,x,EUR,,1e3,0.39,9.61"), "line 2: amount '1e3'"),
        (_report(f"line,{B},capture,p1,x,EUR,,10.000,0.39,9.61"), "line 2: amount '10.000'"),
        (_report(f"line,{B},capture,p1,x,JPY,,10.00,0,10"), "line 2: amount '10.00'"),
        (_report(f"line,{B},capture,p1,x,EUR,,010.00,0.39,9.61"), "line 2: amount '010.00'"),
        (_report(f"line,{B},capture,p1,x,XXX,,10.00,0.39,9.61"), "unknown currency 'XXX'"),
        (_report(f"line,{B},capture,p1,x,EUR,,0.00,0.00,0.00"), "gross must be above zero"),
        (_report(f"line,{B},capture,p1,x,EUR,,10.00,-0.39,10.39"), "fee must not be negative"),
        (_report(f"line,{B},capture,p1,x,EUR,,10.00,0.39,9.60"), "net is not the gross"),
        (_report(f"line,{B},refund,r1,x,EUR,,5.00,0.00,5.00"), "net is not the negated gross"),
        (_report(f"line,{B},payout,p1,x,EUR,,10.00,0.39,9.61"), "type 'payout'"),
        (_report(f"line,{B},capture,p 1,x,EUR,,10.00,0.39,9.61"), "reference 'p 1'"),
        (_report(f"line,{B},capture,p1,x,EUR,3,10.00,0.39,9.61"), "a line has no count"),
        (_report(f"line,{B},capture,p1,x,EUR,,10.00,0.39"), "line 2: 11 fields, 12 expected"),
        (_report(f"sum,{B},,,,EUR,0,0.00,0.00,0.00"), "record 'sum'"),
        (_report(f"line,{B},capture,p1,x,EUR,,10.00,0.39,9.61"), "no total for EUR"),
        (
            _report(f"total,{B},,,,EUR,0,0.00,0.00,0.00", f"total,{B},,,,EUR,0,0.00,0.00,0.00"),
            "line 3: a second total for EUR",
        ),
        (
            _report(
                f"total,{B},,,,EUR,0,0.00,0.00,0.00",
                "total,b-2,2026-12-07,2026-12-08,,,,USD,0,0.00,0.00,0.00",
            ),
            "line 3: batch_id and dates must be those of the first row",
        ),
        (
            _report("total,b-1,2026-12-07,2026-12-06,,,,EUR,0,0.00,0.00,0.00"),
            "payout_date is before",
        ),
        (_report("total,b-1,2026-13-07,2026-12-08,,,,EUR,0,0.00,0.00,0.00"), "is not a date"),
        (_report(f"total,{B},,,,EUR,-1,0.00,0.00,0.00"), "count '-1'"),
        (_report(f'line,{B},capture,"p1,x,EUR,,10.00,0.39,9.61'), "not CSV"),
        (_report(f"total,{B},,,,EUR,0,0.00,0.00,0.00\x00"), "NUL byte"),
    ],
)
def test_bad_input_is_refused_with_a_stable_error(text: str, message: str) -> None:
    """Every malformed report raises ``ReportError`` (code ``invalid_report``) saying what
    and where."""
    with pytest.raises(ReportError) as caught:
        parse_report(text)
    assert caught.value.code == "invalid_report"
    assert message in str(caught.value)
