-- What an accounts-payable team needs on a statement, per contract: payment terms (days
-- from the issue date to the due date) and an optional tax (a label and a rate applied once
-- to the contract's taxable subtotal). A contract loaded before this migration has
-- payment_terms_days = -1: statements refuse it until the contracts file is loaded again
-- with its terms (a missing term is never guessed).
ALTER TABLE contracts ADD COLUMN payment_terms_days Int32 DEFAULT -1;
ALTER TABLE contracts ADD COLUMN tax_label String DEFAULT '';
ALTER TABLE contracts ADD COLUMN tax_rate Decimal(38, 9) DEFAULT toDecimal128(0, 9);
ALTER TABLE contracts ADD COLUMN has_tax UInt8 DEFAULT 0;

DROP TABLE IF EXISTS contracts_current;

CREATE VIEW IF NOT EXISTS contracts_current AS
SELECT contract_id, tenant_id, currency, term_start, term_end, committed_gpus,
       minimum_monthly_commitment, energy_pass_through, energy_rate_per_kwh,
       sla_credit_multiplier, payment_terms_days, has_tax, tax_label, tax_rate, load_id,
       loaded_at
FROM {db}.contracts FINAL;

-- Statements issued from this migration on carry a number, unique and increasing in the
-- order of issue (billing/issue.py); earlier ones have ''.
ALTER TABLE statements ADD COLUMN statement_number String DEFAULT '';

DROP TABLE IF EXISTS issued_statements;

CREATE VIEW IF NOT EXISTS issued_statements AS
SELECT tenant_id, period, statement_id, statement_number, currency, total, digest_sha256,
       issued_at
FROM {db}.statements;
