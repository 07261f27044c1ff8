-- The finance user on a current ClickHouse (SQL access control; not available on the 18.16
-- of the local stack, which uses users.xml: readonly=1 and allow_databases). Run once as an
-- administrator, with the password set by your secret store instead of the placeholder.
-- Not exercised in this repository's CI (no current ClickHouse server runs there).
--
-- What it allows: SELECT on the metering database, nothing else. No INSERT/ALTER/DROP, no
-- other database, no table functions (file, url, remote, s3 … need grants never given:
-- CREATE TEMPORARY TABLE and the source privileges), and settings it cannot change
-- (readonly = 1 and the memory limit are CONST in its profile). Plain views run with the
-- reader's rights (SQL SECURITY INVOKER, the default), so the grant covers the tables the
-- views read; finance is still refused every write.
-- enable_optimize_predicate_expression (on by default on current ClickHouse) is what lets
-- a WHERE on a view reach the tables' keys (docs/FINANCE.md); it is pinned here so a
-- server default cannot turn month-sized questions into reads of all history. A GROUP BY
-- over half the memory limit spills to disk (the usage_ledger view deduplicates with one).
CREATE SETTINGS PROFILE IF NOT EXISTS finance_profile
    SETTINGS readonly = 1 CONST, max_memory_usage = 4000000000 CONST,
             max_execution_time = 600 CONST, enable_optimize_predicate_expression = 1 CONST,
             max_bytes_before_external_group_by = 2000000000 CONST;

CREATE ROLE IF NOT EXISTS finance_reader;
GRANT SELECT ON gpu_meter.* TO finance_reader;

CREATE USER IF NOT EXISTS finance IDENTIFIED WITH sha256_password BY 'CHANGE-ME'
    SETTINGS PROFILE 'finance_profile' DEFAULT ROLE finance_reader;
GRANT finance_reader TO finance;
