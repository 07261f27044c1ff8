-- The finance user on a current ClickHouse (SQL access control; not available on the 18.16
-- of the local stack, which uses users.xml: readonly=1 and allow_databases). Run once per
-- cluster as the pipeline's administrator after `meter migrate`, and again after any
-- migration that recreates a view (docker/compose.yaml's finance-grants service does),
-- with the password from your secret store in place of the placeholder.
--
-- What it allows: SELECT on the documented views and on the one documented table
-- (usage_ledger_holdings, the README's ledger table query), nothing else. No other table,
-- no INSERT/ALTER/DROP, no other database, no table functions (file, url, remote, s3 ...
-- need grants never given), and settings it cannot change (readonly = 1 and the limits
-- are CONST in its profile). The views are made SQL SECURITY DEFINER (the administrator
-- running this), so they read their tables with the definer's rights and finance needs no
-- grant on those tables; a view recreated by a later migration is INVOKER again, and
-- finance is refused it until this runs again (it fails closed).
-- enable_optimize_predicate_expression (on by default on current ClickHouse) is what lets
-- a WHERE on a view reach the tables' keys (docs/FINANCE.md); it is pinned here so a
-- server default cannot turn month-sized questions into reads of all history. A GROUP BY
-- over half the memory limit spills to disk (the usage_ledger view deduplicates with one).
-- tests/unit/test_docker.py holds this list to the migrations' views; the ALTERs are run
-- on current ClickHouse (chdb) by tests/integration/test_engines.py.
CREATE SETTINGS PROFILE IF NOT EXISTS finance_profile ON CLUSTER meter
    SETTINGS readonly = 1 CONST, max_memory_usage = 4000000000 CONST,
             max_execution_time = 600 CONST, enable_optimize_predicate_expression = 1 CONST,
             max_bytes_before_external_group_by = 2000000000 CONST;

CREATE ROLE IF NOT EXISTS finance_reader ON CLUSTER meter;

ALTER TABLE gpu_meter.usage_by_minute ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_by_hour ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.rejected_by_reason ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_by_minute_detail ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.open_seq_gaps ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.pipeline_progress ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.tenants_current ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.contracts_current ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.contract_rates_current ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_by_day ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_by_month ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.contract_position_by_month ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.unhealthy_by_month ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.issued_statements ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.billed_by_period ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_ledger ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_by_day_exact ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_by_month_exact ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.usage_corrections ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.billable_usage_by_month ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.node_status ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.portal_token_state ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.draft_statements ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.issued_statement_documents ON CLUSTER meter MODIFY SQL SECURITY DEFINER;
ALTER TABLE gpu_meter.alert_delivery_log ON CLUSTER meter MODIFY SQL SECURITY DEFINER;

GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_minute TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_hour TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.rejected_by_reason TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_minute_detail TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.open_seq_gaps TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.pipeline_progress TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.tenants_current TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.contracts_current TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.contract_rates_current TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_day TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_month TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.contract_position_by_month TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.unhealthy_by_month TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.issued_statements TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.billed_by_period TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_ledger TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_day_exact TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_month_exact TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_corrections TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.billable_usage_by_month TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.node_status TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_ledger_holdings TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.portal_token_state TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.draft_statements TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.issued_statement_documents TO finance_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.alert_delivery_log TO finance_reader;

CREATE USER IF NOT EXISTS finance ON CLUSTER meter IDENTIFIED WITH sha256_password BY 'CHANGE-ME'
    SETTINGS PROFILE 'finance_profile' DEFAULT ROLE finance_reader;
GRANT ON CLUSTER meter finance_reader TO finance;

-- The portal (`meter portal serve`) reads as its own user, through its own role: SELECT on
-- the views it serves from and the ledger table it asks which nodes served a tenant
-- (portal/reads.py VIEWS; tests/unit/test_docker.py holds the two lists equal), nothing
-- else. A tenant's token never reaches ClickHouse: the portal checks it, then reads.
CREATE ROLE IF NOT EXISTS portal_reader ON CLUSTER meter;

GRANT ON CLUSTER meter SELECT ON gpu_meter.portal_token_state TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.tenants_current TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.contracts_current TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.pipeline_progress TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_by_day TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.billable_usage_by_month TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.contract_position_by_month TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.issued_statement_documents TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.draft_statements TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.open_seq_gaps TO portal_reader;
GRANT ON CLUSTER meter SELECT ON gpu_meter.usage_ledger_holdings TO portal_reader;

CREATE USER IF NOT EXISTS portal ON CLUSTER meter IDENTIFIED WITH sha256_password BY 'CHANGE-ME-PORTAL'
    SETTINGS PROFILE 'finance_profile' DEFAULT ROLE portal_reader;
GRANT ON CLUSTER meter portal_reader TO portal;
