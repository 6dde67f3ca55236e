"""The column catalog covers every column of every table, and nothing else (pure Python)."""

import pytest

from fitness_assets import tables
from fitness_assets.catalog import COLUMN_DESCRIPTIONS, column_description
from fitness_assets.tables import ALL_TABLES, TableSpec


def _every_spec() -> list[TableSpec]:
    """ALL_TABLES plus any TableSpec defined in tables.py but not listed there."""
    specs = {spec.qualified_name: spec for spec in ALL_TABLES}
    for value in vars(tables).values():
        if isinstance(value, TableSpec):
            specs.setdefault(value.qualified_name, value)
    return list(specs.values())


def test_every_column_of_every_table_has_a_description():
    missing = [f"{spec.qualified_name}.{column}" for spec in _every_spec() for column in spec.column_names
               if not (COLUMN_DESCRIPTIONS.get(spec.qualified_name, {}).get(column) or "").strip()]
    assert not missing, f"columns without a description: {missing}"
    for spec in ALL_TABLES:
        for column in spec.column_names:
            assert column_description(spec, column).strip()


def test_no_description_for_a_table_or_column_that_does_not_exist():
    columns = {spec.qualified_name: set(spec.column_names) for spec in _every_spec()}
    stale_tables = sorted(set(COLUMN_DESCRIPTIONS) - set(columns))
    assert not stale_tables, f"descriptions for tables that do not exist: {stale_tables}"
    stale = sorted(f"{table}.{column}" for table, described in COLUMN_DESCRIPTIONS.items()
                   for column in described if column not in columns[table])
    assert not stale, f"descriptions for columns that do not exist: {stale}"


def test_descriptions_are_one_short_sentence():
    for table, described in COLUMN_DESCRIPTIONS.items():
        for column, text in described.items():
            assert text == text.strip() and text.endswith("."), f"{table}.{column}: {text!r}"
            assert "\n" not in text and len(text) <= 300, f"{table}.{column} is too long"


def test_unknown_column_raises_a_key_error_naming_table_and_column():
    spec = tables.USERS
    with pytest.raises(KeyError) as error:
        column_description(spec, "no_such_column")
    assert "no_such_column" in str(error.value) and spec.qualified_name in str(error.value)


def test_unknown_table_raises_a_key_error_naming_the_table():
    spec = TableSpec(layer="test", name="not_catalogued", columns=(("k", tables.LONG),), description="")
    with pytest.raises(KeyError) as error:
        column_description(spec, "k")
    assert "test.not_catalogued" in str(error.value)
