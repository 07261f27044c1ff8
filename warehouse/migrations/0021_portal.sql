-- The tenant portal (portal/): its tokens, the drafts it shows and the issued documents it
-- serves, and the alerts it sends. The portal itself only reads, through the views below
-- and the documented ones; `meter portal token`, `meter portal drafts` and
-- `meter portal alerts` write these tables.
--
-- A token is stored only as the SHA-256 of its secret. Issue writes version 1; revoke
-- writes the same row again with revoked_at set and a higher version. The view is read on
-- every request, so a revocation counts from the next request (argMax, not FINAL: the
-- table is small and argMax needs no merge). revoked_at_s: when it was revoked, in Unix
-- seconds; 0: it was not (a zero DateTime prints differently on 18.16 and current).
CREATE TABLE IF NOT EXISTS portal_tokens (
    token_sha256 String,
    kind String,
    tenant_id String,
    label String,
    issued_at DateTime('UTC'),
    expires_at DateTime('UTC'),
    revoked_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY token_sha256;

-- (The latest values are named apart and renamed outside: ClickHouse 18.16 would read an
-- alias equal to a column's name inside the aggregate as the aggregate itself.)
CREATE VIEW IF NOT EXISTS portal_token_state AS
SELECT token_sha256, t_kind AS kind, t_tenant_id AS tenant_id, t_label AS label,
       t_issued_at AS issued_at, t_expires_at AS expires_at,
       toUInt32(t_revoked_at) AS revoked_at_s
FROM (
    SELECT token_sha256,
           argMax(kind, version) AS t_kind,
           argMax(tenant_id, version) AS t_tenant_id,
           argMax(label, version) AS t_label,
           argMax(issued_at, version) AS t_issued_at,
           argMax(expires_at, version) AS t_expires_at,
           argMax(revoked_at, version) AS t_revoked_at
    FROM {db}.portal_tokens
    GROUP BY token_sha256
) AS latest;

-- The statement of an open (not issued) month as it stood when it was drawn
-- (`meter portal drafts`, run every few minutes): composing one takes seconds, a page
-- must not. The latest drawing of each (tenant, period) is the draft.
CREATE TABLE IF NOT EXISTS statement_drafts (
    tenant_id String,
    period String,
    drawn_at DateTime('UTC'),
    total String,
    document String
) ENGINE = ReplacingMergeTree(drawn_at)
ORDER BY (tenant_id, period);

CREATE VIEW IF NOT EXISTS draft_statements AS
SELECT tenant_id, period, d_drawn_at AS drawn_at, d_total AS total, d_document AS document
FROM (
    SELECT tenant_id, period,
           max(drawn_at) AS d_drawn_at,
           argMax(total, drawn_at) AS d_total,
           argMax(document, drawn_at) AS d_document
    FROM {db}.statement_drafts
    GROUP BY tenant_id, period
) AS latest;

-- Issued statements with the canonical JSON they were issued as: the portal renders the
-- tenant's downloads from it, byte for byte what `meter statements` wrote.
CREATE VIEW IF NOT EXISTS issued_statement_documents AS
SELECT tenant_id, period, statement_id, statement_number, digest_sha256, canonical_json,
       issued_at
FROM {db}.statements;

-- Alert webhooks, set by finance per tenant. The secret signs every request; it is never
-- shown by any view. Setting again writes a higher version.
CREATE TABLE IF NOT EXISTS alert_hooks (
    tenant_id String,
    url String,
    secret String,
    usage_fractions Array(String),
    unhealthy_share String,
    gap_minutes UInt32,
    enabled UInt8,
    set_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY tenant_id;

-- One row per alert event. The event id is derived from what happened (tenant, kind,
-- month, threshold; for a gap its node, boot and first missing seq), so an event found
-- twice is one row and is delivered under one id.
CREATE TABLE IF NOT EXISTS alert_events (
    event_id String,
    tenant_id String,
    kind String,
    month String,
    threshold String,
    body String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, event_id);

-- Every delivery attempt: its HTTP status (0: no response) and what went wrong.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    event_id String,
    tenant_id String,
    attempt UInt32,
    attempted_at DateTime('UTC'),
    status_code Int32,
    delivered UInt8,
    error String
) ENGINE = MergeTree()
ORDER BY (tenant_id, event_id, attempt);

-- Per event: its attempts, whether one was delivered, the last answer; last_attempt_at_s in
-- Unix seconds, 0 when never tried.
CREATE VIEW IF NOT EXISTS alert_delivery_log AS
SELECT e.tenant_id AS tenant_id, e.event_id AS event_id, e.kind AS kind, e.month AS month,
       e.threshold AS threshold, e.created_at AS created_at,
       d.attempts AS attempts, d.any_delivered AS delivered, d.last_status AS last_status,
       d.last_error AS last_error, d.last_attempt_at_s AS last_attempt_at_s
FROM (SELECT DISTINCT tenant_id, event_id, kind, month, threshold, created_at
      FROM {db}.alert_events) AS e
LEFT JOIN (
    SELECT event_id, count() AS attempts, max(delivered) AS any_delivered,
           argMax(status_code, attempt) AS last_status, argMax(error, attempt) AS last_error,
           toUInt32(max(attempted_at)) AS last_attempt_at_s
    FROM {db}.alert_deliveries
    GROUP BY event_id
) AS d ON e.event_id = d.event_id;
