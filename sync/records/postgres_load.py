"""PostgreSQL-only part of moving an embedded archive in (`sync/backup.py`,
`move-archive`), beside the PostgreSQL adapter: after rows were copied in
with the ids they already had, the identity columns must hand out ids
after the largest one copied, not 1, 2, 3 again."""

from __future__ import annotations


def advance_identities(unit) -> list[str]:
    """Inside the caller's transaction on PostgreSQL records: set every
    identity column's sequence past the largest value in its table (or to 1
    for an empty table, next value 1). Returns the `table.column` names."""
    columns = unit.query("SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name")
    for column in columns:
        table, name = column["table_name"], column["column_name"]
        unit.query(f"SELECT setval(pg_get_serial_sequence('{table}', '{name}'), "
                   f"COALESCE((SELECT MAX({name}) FROM {table}), 0) + 1, false)")
    return [f"{c['table_name']}.{c['column_name']}" for c in columns]
