"""Every DDL statement chatstore ships is one Citus accepts on the tables it manages.

Citus manages the chat tables as soon as they have a foreign key to a ``users`` reference
table, even before they are distributed, and then refuses some ``ALTER TABLE`` forms. The
rules below are those of Citus 13.2's ``ErrorIfUnsupportedAlterTableStmt``
(``src/backend/distributed/commands/table.c``), checked on PostgreSQL's own parse tree
(pglast, libpg_query): no database, no Citus needed. ``tests/citus/`` applies the same
migrations on a live cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pglast import parse_sql
from pglast.ast import AlterTableCmd, AlterTableStmt, ColumnDef, Constraint, FuncCall, Node
from pglast.enums import AlterTableType, ConstrType

REPO = Path(__file__).resolve().parents[2]
# Everything chatstore runs as DDL: the migrations both ways, the schema for reading, and
# the optional row-level-security policies.
DDL_FILES = sorted([*(REPO / "migrations").glob("*.sql"), REPO / "sql" / "schema.sql",
                    REPO / "chatstore" / "sql" / "rls.sql"])
DISTRIBUTION_COLUMN = "user_id"
CHAT_TABLES = ("conversations", "messages")

# Subcommands Citus runs on a table it manages; anything else is "currently unsupported".
SUPPORTED = {
    AlterTableType.AT_AddColumn, AlterTableType.AT_ColumnDefault,
    AlterTableType.AT_AlterColumnType, AlterTableType.AT_DropColumn,
    AlterTableType.AT_DropNotNull, AlterTableType.AT_AddConstraint,
    AlterTableType.AT_AttachPartition, AlterTableType.AT_DetachPartition,
    AlterTableType.AT_EnableTrig, AlterTableType.AT_EnableAlwaysTrig,
    AlterTableType.AT_EnableReplicaTrig, AlterTableType.AT_EnableTrigUser,
    AlterTableType.AT_DisableTrig, AlterTableType.AT_DisableTrigUser,
    AlterTableType.AT_EnableTrigAll, AlterTableType.AT_DisableTrigAll,
    AlterTableType.AT_SetAccessMethod, AlterTableType.AT_SetNotNull,
    AlterTableType.AT_ReplicaIdentity, AlterTableType.AT_ChangeOwner,
    AlterTableType.AT_EnableRowSecurity, AlterTableType.AT_DisableRowSecurity,
    AlterTableType.AT_ForceRowSecurity, AlterTableType.AT_NoForceRowSecurity,
    AlterTableType.AT_ValidateConstraint, AlterTableType.AT_DropConstraint,
    AlterTableType.AT_SetCompression, AlterTableType.AT_SetRelOptions,
    AlterTableType.AT_ResetRelOptions, AlterTableType.AT_ReplaceRelOptions,
    AlterTableType.AT_SetLogged, AlterTableType.AT_SetUnLogged,
}
# Subcommands Citus takes only alone in their ALTER TABLE.
ALONE = {
    AlterTableType.AT_AddConstraint: "ADD CONSTRAINT",
    AlterTableType.AT_AttachPartition: "ATTACH PARTITION",
    AlterTableType.AT_DetachPartition: "DETACH PARTITION",
    **{kind: "ENABLE/DISABLE TRIGGER" for kind in (
        AlterTableType.AT_EnableTrig, AlterTableType.AT_EnableAlwaysTrig,
        AlterTableType.AT_EnableReplicaTrig, AlterTableType.AT_EnableTrigUser,
        AlterTableType.AT_DisableTrig, AlterTableType.AT_DisableTrigUser,
        AlterTableType.AT_EnableTrigAll, AlterTableType.AT_DisableTrigAll)},
}
SERIAL_TYPES = {"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"}
# Subcommands that may not touch the distribution column.
ON_DISTRIBUTION_COLUMN = {AlterTableType.AT_AlterColumnType, AlterTableType.AT_DropColumn,
                          AlterTableType.AT_DropNotNull, AlterTableType.AT_ColumnDefault}


def _calls_nextval(node: object) -> bool:
    """Whether an expression calls nextval() anywhere inside."""
    if isinstance(node, FuncCall) and node.funcname and node.funcname[-1].sval == "nextval":
        return True
    if isinstance(node, Node):
        return any(_calls_nextval(getattr(node, name)) for name in node)
    if isinstance(node, tuple | list):
        return any(_calls_nextval(item) for item in node)
    return False


def _refusals_of(statement: AlterTableStmt) -> list[str]:
    assert statement.relation is not None
    table = statement.relation.relname
    commands: list[AlterTableCmd] = list(statement.cmds or ())
    several = len(commands) > 1
    found: list[str] = []
    for command in commands:
        kind = command.subtype
        assert kind is not None
        if kind not in SUPPORTED:
            found.append(f"ALTER TABLE {table}: {kind.name} is not supported by Citus")
        if several and kind in ALONE:
            found.append(f"ALTER TABLE {table}: {ALONE[kind]} with other subcommands")
        if (kind in ON_DISTRIBUTION_COLUMN and table in CHAT_TABLES
                and command.name == DISTRIBUTION_COLUMN):
            found.append(f"ALTER TABLE {table}: {kind.name} on the distribution column")
        if kind == AlterTableType.AT_ColumnDefault and several and _calls_nextval(command.def_):
            found.append(f"ALTER TABLE {table}: a nextval() default with other subcommands")
        if kind == AlterTableType.AT_AddColumn and isinstance(command.def_, ColumnDef):
            column = command.def_
            constraints: list[Constraint] = list(column.constraints or ())
            names = column.typeName.names if column.typeName else None
            type_name = names[-1].sval if names else ""
            if type_name in SERIAL_TYPES and (several or constraints):
                found.append(f"ALTER TABLE {table}: serial column {column.colname} with "
                             "other subcommands or constraints")
            for constraint in constraints:
                if constraint.contype == ConstrType.CONSTR_IDENTITY:
                    found.append(f"ALTER TABLE {table}: identity column {column.colname}")
                if (constraint.contype == ConstrType.CONSTR_DEFAULT and several
                        and _calls_nextval(constraint.raw_expr)):
                    found.append(f"ALTER TABLE {table}: nextval() default of "
                                 f"{column.colname} with other subcommands")
    return found


def citus_refusals(sql: str) -> list[str]:
    """What in ``sql`` Citus 13.2 would refuse on a table it manages (empty: none)."""
    found: list[str] = []
    for raw in parse_sql(sql):
        if isinstance(raw.stmt, AlterTableStmt):
            found.extend(_refusals_of(raw.stmt))
    return found


@pytest.mark.parametrize("path", DDL_FILES, ids=lambda p: p.name)
def test_citus_accepts_every_ddl_statement(path: Path) -> None:
    assert citus_refusals(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(("sql", "refusal"), [
    ("ALTER TABLE messages ADD COLUMN x int, ADD CONSTRAINT c CHECK (x > 0)",
     "ADD CONSTRAINT with other subcommands"),
    ("ALTER TABLE messages DROP COLUMN x, ADD CONSTRAINT c UNIQUE (user_id, seq)",
     "ADD CONSTRAINT with other subcommands"),
    ("ALTER TABLE messages ADD COLUMN n bigserial", ""),
    ("ALTER TABLE messages ADD COLUMN n bigserial, ADD COLUMN m int",
     "serial column n with other subcommands"),
    ("ALTER TABLE messages ADD COLUMN n int GENERATED ALWAYS AS IDENTITY",
     "identity column n"),
    ("ALTER TABLE messages ADD COLUMN n int DEFAULT nextval('s'), ADD COLUMN m int",
     "nextval() default of n"),
    ("ALTER TABLE messages ALTER COLUMN user_id TYPE varchar",
     "AT_AlterColumnType on the distribution column"),
    ("ALTER TABLE conversations ALTER COLUMN title SET STATISTICS 100",
     "AT_SetStatistics is not supported"),
    ("ALTER TABLE conversations ALTER COLUMN title TYPE varchar, "
     "ALTER COLUMN title SET DEFAULT 'x'", ""),
])
def test_the_check_refuses_what_citus_refuses(sql: str, refusal: str) -> None:
    found = citus_refusals(sql)
    if refusal:
        assert any(refusal in problem for problem in found), found
    else:
        assert found == []
