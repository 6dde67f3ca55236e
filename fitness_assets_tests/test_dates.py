import datetime as dt

from fitness_assets.assets.reference.checks import expected_calendar_row
from fitness_assets.transforms.reference import date_lookup


def test_week_rules_of_the_contract(spark):
    rows = {r["date"]: r.asDict() for r in date_lookup(spark, dt.date(2022, 12, 25), dt.date(2024, 1, 7)).collect()}
    assert rows[dt.date(2023, 1, 1)]["week"] == 1
    assert rows[dt.date(2023, 1, 1)]["week_part"] == "2023-1"
    assert rows[dt.date(2023, 1, 1)]["dayofweek"] == 1  # Sunday
    assert rows[dt.date(2023, 12, 31)]["week"] == 53
    assert rows[dt.date(2024, 1, 1)]["week"] == 0
    assert rows[dt.date(2024, 1, 1)]["week_part"] == "2024-0"
    assert rows[dt.date(2024, 1, 6)]["dayofweek"] == 7  # Saturday
    assert rows[dt.date(2024, 1, 7)]["week"] == 1


def test_every_day_of_2023_and_2024_matches_strftime(spark):
    start, end = dt.date(2023, 1, 1), dt.date(2024, 12, 31)
    rows = date_lookup(spark, start, end).collect()
    assert len(rows) == (end - start).days + 1 == 731
    for row in rows:
        assert row.asDict() == expected_calendar_row(row["date"])
