//! The PostgreSQL store's schema: its migrations (frozen texts, applied in
//! order under an advisory lock, so processes starting together migrate
//! once) and the check that a database holds a store at all.

use crate::store::{Result, StoreError};

/// The advisory lock key under which migrations run ("keqing-m").
const MIGRATION_LOCK: i64 = 0x6b65_7169_6e67_2d6d;

/// The migrations, in order; a migration's text is frozen once released
/// (a change to the schema is a new migration).
const MIGRATIONS: &[&str] = &[
    // 1: devices, the change log, documents, the audit log, the epoch, and
    // the projection tables of projection version 3 (the SQLite store's
    // tables, in PostgreSQL's types: text and bigint, dates as ISO text).
    r#"
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    office TEXT,
    token_sha256 BYTEA NOT NULL UNIQUE,
    actor BYTEA UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    cert_sha256 BYTEA
);
-- seq is taken as max + 1 by the one transaction holding the log's
-- advisory lock (the single-appender rule), never from a sequence: numbers
-- become visible in order, without gaps.
CREATE TABLE changes (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    doc_id TEXT NOT NULL,
    office TEXT NOT NULL,
    device_id TEXT NOT NULL,
    bytes BYTEA NOT NULL
);
CREATE INDEX changes_office_seq ON changes (office, seq);
CREATE INDEX changes_doc ON changes (doc_id, seq);
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    snapshot BYTEA NOT NULL,
    complete BOOLEAN NOT NULL,
    last_seq BIGINT NOT NULL
);
CREATE INDEX documents_office ON documents (office, id);
CREATE TABLE projector (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cursor BIGINT NOT NULL
);
INSERT INTO projector (id, cursor) VALUES (1, 0);
CREATE TABLE audit (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE FUNCTION keqing_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION keqing_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION keqing_audit_append_only();
CREATE TABLE store_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT NOT NULL
);
INSERT INTO store_meta (id, epoch) VALUES (1, replace(gen_random_uuid()::text, '-', ''));
CREATE TABLE unreadable_documents (
    doc_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    reason TEXT NOT NULL,
    seq BIGINT NOT NULL,
    since TEXT NOT NULL
);
CREATE INDEX unreadable_documents_office ON unreadable_documents (office);

CREATE TABLE staff (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    active BIGINT NOT NULL,
    office TEXT NOT NULL
);
CREATE TABLE patients (
    dossier_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    name TEXT NOT NULL,
    sex TEXT,
    age BIGINT,
    address TEXT,
    diseases TEXT NOT NULL,
    created_at TEXT NOT NULL,
    typical BIGINT NOT NULL,
    merged_into TEXT,
    conflicts BIGINT NOT NULL,
    phone TEXT,
    typical_at TEXT,
    category TEXT NOT NULL,
    lapses_on TEXT,
    assignee TEXT,
    open_problems BIGINT NOT NULL,
    last_contact TEXT,
    next_entry TEXT
);
CREATE INDEX patients_name_age ON patients (name, age);
CREATE INDEX patients_typical ON patients (typical_at) WHERE typical = 1;
CREATE INDEX patients_category ON patients (office, category)
    INCLUDE (lapses_on, typical, open_problems) WHERE merged_into IS NULL;
CREATE TABLE patient_phones (
    phone TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    PRIMARY KEY (phone, dossier_id)
);
CREATE INDEX patient_phones_dossier ON patient_phones (dossier_id);
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    caller_phone TEXT NOT NULL,
    source TEXT NOT NULL,
    disease TEXT,
    office TEXT NOT NULL
);
CREATE INDEX calls_dossier ON calls (dossier_id);
CREATE INDEX calls_at ON calls (at, office) INCLUDE (dossier_id, staff, source, disease);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchased BIGINT NOT NULL,
    office TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX visits_dossier ON visits (dossier_id);
CREATE INDEX visits_at ON visits (at, office) INCLUDE (dossier_id, staff, purchased, reason);
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    product TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    amount_fen BIGINT NOT NULL,
    runout TEXT,
    nth BIGINT NOT NULL,
    prev_runout TEXT,
    office TEXT NOT NULL
);
CREATE INDEX purchases_dossier ON purchases (dossier_id);
CREATE INDEX purchases_at ON purchases (at, office)
    INCLUDE (dossier_id, staff, amount_fen, nth, prev_runout);
CREATE TABLE followups (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    kind TEXT NOT NULL,
    on_time BIGINT NOT NULL,
    office TEXT NOT NULL
);
CREATE INDEX followups_dossier ON followups (dossier_id);
CREATE INDEX followups_at ON followups (at, office) INCLUDE (dossier_id, staff, on_time);
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL
);
CREATE INDEX contacts_dossier ON contacts (dossier_id);
CREATE TABLE problems (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    resolved_at TEXT,
    office TEXT NOT NULL
);
CREATE INDEX problems_dossier ON problems (dossier_id);
CREATE INDEX problems_at ON problems (at, office) INCLUDE (dossier_id, resolved_at);
-- settled_on is '9999-12-31' for a slot that never settles.
CREATE TABLE slots (
    dossier_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    cadence TEXT NOT NULL,
    reason TEXT NOT NULL,
    day BIGINT,
    anchor TEXT NOT NULL,
    due_from TEXT NOT NULL,
    deadline TEXT NOT NULL,
    satisfied_at TEXT,
    closed_at TEXT,
    settled_on TEXT NOT NULL,
    office TEXT NOT NULL,
    due_counted BIGINT NOT NULL,
    on_time BIGINT NOT NULL,
    PRIMARY KEY (dossier_id, n)
);
CREATE INDEX slots_deadline ON slots (deadline, office) INCLUDE (due_counted, on_time, cadence);
-- The overdue count reads the slots still on the list at a day's end: the
-- ones settled after it (few, for a recent day) and never.
CREATE INDEX slots_open ON slots (settled_on) INCLUDE (due_from, deadline, office);
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    office TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchase TEXT,
    product TEXT,
    quantity BIGINT,
    address TEXT,
    due TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    settled_at TEXT
);
CREATE INDEX deliveries_dossier ON deliveries (dossier_id);
CREATE INDEX deliveries_open ON deliveries (status, due, office);
CREATE TABLE nonpatient_calls (
    id TEXT PRIMARY KEY,
    log_id TEXT NOT NULL,
    office TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    kind TEXT NOT NULL,
    phone TEXT,
    notes TEXT
);
CREATE INDEX nonpatient_calls_log ON nonpatient_calls (log_id);
CREATE INDEX nonpatient_calls_at ON nonpatient_calls (at, office) INCLUDE (kind, staff);
CREATE TABLE projection_digests (
    dossier_id TEXT PRIMARY KEY,
    digests BYTEA NOT NULL
);
"#,
    // 2: request buckets every process serving the store takes from, so
    // a device's rate limit holds across processes (unlogged: a crash
    // only forgets how much of its burst a device has used).
    r#"
CREATE UNLOGGED TABLE request_buckets (
    device_id TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE FUNCTION keqing_take_request(device TEXT, per_second DOUBLE PRECISION, burst DOUBLE PRECISION)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    now_at TIMESTAMPTZ;
    have DOUBLE PRECISION;
BEGIN
    INSERT INTO request_buckets (device_id, tokens, at) VALUES (device, burst, clock_timestamp())
        ON CONFLICT (device_id) DO NOTHING;
    -- Row locked first, time read after: concurrent takers go one by one.
    PERFORM 1 FROM request_buckets WHERE device_id = device FOR UPDATE;
    now_at := clock_timestamp();
    SELECT least(burst, b.tokens + greatest(0, extract(epoch FROM now_at - b.at)) * per_second)
        INTO have FROM request_buckets b WHERE b.device_id = device;
    IF have >= 1 THEN
        UPDATE request_buckets SET tokens = have - 1, at = now_at WHERE device_id = device;
        RETURN TRUE;
    END IF;
    UPDATE request_buckets SET tokens = have, at = now_at WHERE device_id = device;
    RETURN FALSE;
END
$$;
"#,
    // 3: projection version 4, the category tallies (see the projection
    // crate's `v4_additions`): per office, category and lapse date, kept in
    // step with `patients` by a trigger, filled from the rows there are.
    // Writers of `patients` are one transaction at a time (the projector's
    // cursor row lock), so tallies see no concurrent increments.
    r#"
CREATE TABLE category_tallies (
    office TEXT NOT NULL,
    category TEXT NOT NULL,
    lapses_on TEXT NOT NULL,
    patients BIGINT NOT NULL,
    typical BIGINT NOT NULL,
    problem BIGINT NOT NULL,
    PRIMARY KEY (office, category, lapses_on)
);
CREATE FUNCTION keqing_tally_patient(p patients, delta BIGINT) RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO category_tallies VALUES (p.office, p.category, coalesce(p.lapses_on, ''),
        delta, CASE WHEN p.typical = 1 THEN delta ELSE 0 END,
        CASE WHEN p.open_problems > 0 THEN delta ELSE 0 END)
    ON CONFLICT (office, category, lapses_on) DO UPDATE SET
        patients = category_tallies.patients + excluded.patients,
        typical = category_tallies.typical + excluded.typical,
        problem = category_tallies.problem + excluded.problem;
    DELETE FROM category_tallies WHERE office = p.office AND category = p.category
        AND lapses_on = coalesce(p.lapses_on, '') AND patients = 0;
$$;
CREATE FUNCTION keqing_category_tallies() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.office, OLD.category, OLD.lapses_on, OLD.typical = 1,
            OLD.open_problems > 0, OLD.merged_into IS NULL)
        IS NOT DISTINCT FROM (NEW.office, NEW.category, NEW.lapses_on, NEW.typical = 1,
            NEW.open_problems > 0, NEW.merged_into IS NULL) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.merged_into IS NULL THEN
        PERFORM keqing_tally_patient(OLD, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.merged_into IS NULL THEN
        PERFORM keqing_tally_patient(NEW, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER category_tallies AFTER INSERT OR UPDATE OR DELETE ON patients
    FOR EACH ROW EXECUTE FUNCTION keqing_category_tallies();
INSERT INTO category_tallies
SELECT office, category, coalesce(lapses_on, ''), count(*),
       count(*) FILTER (WHERE typical = 1), count(*) FILTER (WHERE open_problems > 0)
FROM patients WHERE merged_into IS NULL
GROUP BY office, category, coalesce(lapses_on, '');
"#,
    // 4: projection version 5, the day tallies of follow-ups and of slots
    // counted as due (see the projection crate's `v5_additions`), the same
    // way.
    r#"
CREATE TABLE followup_tallies (
    day TEXT NOT NULL,
    office TEXT NOT NULL,
    staff TEXT NOT NULL,
    done BIGINT NOT NULL,
    on_time BIGINT NOT NULL,
    PRIMARY KEY (day, office, staff)
);
CREATE FUNCTION keqing_tally_followup(f followups, delta BIGINT) RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO followup_tallies VALUES (left(f.at, 10), f.office, f.staff, delta,
        CASE WHEN f.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (day, office, staff) DO UPDATE SET
        done = followup_tallies.done + excluded.done,
        on_time = followup_tallies.on_time + excluded.on_time;
    DELETE FROM followup_tallies WHERE day = left(f.at, 10) AND office = f.office
        AND staff = f.staff AND done = 0;
$$;
CREATE FUNCTION keqing_followup_tallies() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (left(OLD.at, 10), OLD.office, OLD.staff, OLD.on_time <> 0)
        IS NOT DISTINCT FROM (left(NEW.at, 10), NEW.office, NEW.staff, NEW.on_time <> 0) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM keqing_tally_followup(OLD, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM keqing_tally_followup(NEW, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER followup_tallies AFTER INSERT OR UPDATE OR DELETE ON followups
    FOR EACH ROW EXECUTE FUNCTION keqing_followup_tallies();
INSERT INTO followup_tallies
SELECT left(at, 10), office, staff, count(*), count(*) FILTER (WHERE on_time <> 0)
FROM followups GROUP BY left(at, 10), office, staff;
CREATE TABLE slot_tallies (
    deadline TEXT NOT NULL,
    office TEXT NOT NULL,
    due BIGINT NOT NULL,
    due_on_time BIGINT NOT NULL,
    not_visited_due BIGINT NOT NULL,
    not_visited_on_time BIGINT NOT NULL,
    PRIMARY KEY (deadline, office)
);
CREATE FUNCTION keqing_tally_slot(s slots, delta BIGINT) RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO slot_tallies VALUES (s.deadline, s.office, delta,
        CASE WHEN s.on_time <> 0 THEN delta ELSE 0 END,
        CASE WHEN s.cadence = 'not_visited' THEN delta ELSE 0 END,
        CASE WHEN s.cadence = 'not_visited' AND s.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (deadline, office) DO UPDATE SET
        due = slot_tallies.due + excluded.due,
        due_on_time = slot_tallies.due_on_time + excluded.due_on_time,
        not_visited_due = slot_tallies.not_visited_due + excluded.not_visited_due,
        not_visited_on_time = slot_tallies.not_visited_on_time + excluded.not_visited_on_time;
    DELETE FROM slot_tallies WHERE deadline = s.deadline AND office = s.office AND due = 0;
$$;
CREATE FUNCTION keqing_slot_tallies() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.due_counted = 1, OLD.deadline, OLD.office, OLD.on_time <> 0,
            OLD.cadence = 'not_visited')
        IS NOT DISTINCT FROM (NEW.due_counted = 1, NEW.deadline, NEW.office, NEW.on_time <> 0,
            NEW.cadence = 'not_visited') THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.due_counted = 1 THEN
        PERFORM keqing_tally_slot(OLD, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.due_counted = 1 THEN
        PERFORM keqing_tally_slot(NEW, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER slot_tallies AFTER INSERT OR UPDATE OR DELETE ON slots
    FOR EACH ROW EXECUTE FUNCTION keqing_slot_tallies();
INSERT INTO slot_tallies
SELECT deadline, office, count(*), count(*) FILTER (WHERE on_time <> 0),
       count(*) FILTER (WHERE cadence = 'not_visited'),
       count(*) FILTER (WHERE cadence = 'not_visited' AND on_time <> 0)
FROM slots WHERE due_counted = 1 GROUP BY deadline, office;
"#,
    // 5: projection version 6: the typical patients' range read covers
    // its columns (visits' already did here).
    r#"
CREATE INDEX patients_typical_report ON patients (typical_at) INCLUDE (office, dossier_id)
    WHERE typical = 1;
DROP INDEX patients_typical;
"#,
    // 6: headquarters' accounts and the offices' read audit (positions in
    // commit order: appends hold an advisory lock, see `people.rs`).
    r#"
CREATE TABLE hq_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled_at TEXT
);
CREATE TABLE office_reads (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    office TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    device_seq BIGINT NOT NULL,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    UNIQUE (device_id, device_seq)
);
CREATE INDEX office_reads_office ON office_reads (office, seq);
CREATE TRIGGER office_reads_append_only BEFORE UPDATE OR DELETE ON office_reads
    FOR EACH ROW EXECUTE FUNCTION keqing_audit_append_only();
CREATE TRIGGER office_reads_no_truncate BEFORE TRUNCATE ON office_reads
    FOR EACH STATEMENT EXECUTE FUNCTION keqing_audit_append_only();
"#,
    // 7: media spend (one amount per day, office and catalogue source).
    r#"
CREATE TABLE spend (
    day TEXT NOT NULL,
    office TEXT NOT NULL,
    source_code TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    PRIMARY KEY (day, office, source_code)
);
"#,
    // 8: projection version 7: staff events and the offices' own
    // activities, derived by Rust: the projector derives every document
    // again (the stored digests spare the older tables' rows).
    r#"
CREATE TABLE staff_events (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    office TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    activity TEXT,
    patient_since TEXT
);
CREATE INDEX staff_events_dossier ON staff_events (dossier_id);
CREATE INDEX staff_events_at ON staff_events (at, office)
    INCLUDE (kind, staff, dossier_id, activity, patient_since);
CREATE TABLE activities (
    id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    starts TEXT NOT NULL,
    ends TEXT NOT NULL,
    source TEXT
);
CREATE INDEX activities_office ON activities (office);
UPDATE projector SET cursor = 0 WHERE id = 1;
DELETE FROM unreadable_documents;
"#,
    // 9: headquarters' transfers and erasures (one row per office whose
    // devices must learn of it; an erasure's rows are its tombstone, no
    // content), and erasures asked for and not yet confirmed.
    r#"
CREATE TABLE fates (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id TEXT NOT NULL,
    office TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'erase')),
    from_office TEXT NOT NULL,
    to_office TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL,
    by TEXT NOT NULL
);
CREATE INDEX fates_doc ON fates (doc_id, seq);
CREATE INDEX fates_office ON fates (office, seq);
CREATE TABLE erasure_requests (
    doc_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL
);
"#,
    // 10: fleet health (what each device last said of itself, and when it
    // last pushed, pulled and was up to date), flushed by every serving
    // process every few seconds.
    r#"
CREATE TABLE device_health (
    device_id TEXT PRIMARY KEY,
    client_version TEXT,
    outbox BIGINT,
    quarantined BIGINT,
    last_push TEXT,
    last_pull TEXT,
    last_sync TEXT
);
"#,
    // 11: log compaction (the SQLite store's LOG_COMPACTION): compaction
    // took the changes at or below `floor` whose document's snapshot holds
    // them (each document's latest change stays); `log_marks` says where
    // the log ended when. `high_water`: the largest number the log ever
    // gave, kept before an erasure deletes changes, so that numbers never
    // go back when the erased dossier held the last ones (SQLite's
    // AUTOINCREMENT keeps its own); `removed`: how many changes
    // compaction and erasures took (the integrity check's count).
    r#"
CREATE TABLE log_compaction (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    floor BIGINT NOT NULL,
    high_water BIGINT NOT NULL,
    removed BIGINT NOT NULL
);
INSERT INTO log_compaction (id, floor, high_water, removed)
    SELECT 1, 0, coalesce(max(seq), 0), coalesce(max(seq), 0) - count(*) FROM changes;
CREATE TABLE log_marks (
    at TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
"#,
    // 12: the tally functions the projection's triggers call, the same
    // statements in PL/pgSQL: a LANGUAGE sql function called from a trigger
    // plans its statements again at every call (~60 µs each, a third of the
    // projector's time at 10k dossiers); PL/pgSQL keeps their plans for the
    // session.
    r#"
CREATE OR REPLACE FUNCTION keqing_tally_patient(p patients, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO category_tallies VALUES (p.office, p.category, coalesce(p.lapses_on, ''),
        delta, CASE WHEN p.typical = 1 THEN delta ELSE 0 END,
        CASE WHEN p.open_problems > 0 THEN delta ELSE 0 END)
    ON CONFLICT (office, category, lapses_on) DO UPDATE SET
        patients = category_tallies.patients + excluded.patients,
        typical = category_tallies.typical + excluded.typical,
        problem = category_tallies.problem + excluded.problem;
    DELETE FROM category_tallies WHERE office = p.office AND category = p.category
        AND lapses_on = coalesce(p.lapses_on, '') AND patients = 0;
END
$$;
CREATE OR REPLACE FUNCTION keqing_tally_followup(f followups, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO followup_tallies VALUES (left(f.at, 10), f.office, f.staff, delta,
        CASE WHEN f.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (day, office, staff) DO UPDATE SET
        done = followup_tallies.done + excluded.done,
        on_time = followup_tallies.on_time + excluded.on_time;
    DELETE FROM followup_tallies WHERE day = left(f.at, 10) AND office = f.office
        AND staff = f.staff AND done = 0;
END
$$;
CREATE OR REPLACE FUNCTION keqing_tally_slot(s slots, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO slot_tallies VALUES (s.deadline, s.office, delta,
        CASE WHEN s.on_time <> 0 THEN delta ELSE 0 END,
        CASE WHEN s.cadence = 'not_visited' THEN delta ELSE 0 END,
        CASE WHEN s.cadence = 'not_visited' AND s.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (deadline, office) DO UPDATE SET
        due = slot_tallies.due + excluded.due,
        due_on_time = slot_tallies.due_on_time + excluded.due_on_time,
        not_visited_due = slot_tallies.not_visited_due + excluded.not_visited_due,
        not_visited_on_time = slot_tallies.not_visited_on_time + excluded.not_visited_on_time;
    DELETE FROM slot_tallies WHERE deadline = s.deadline AND office = s.office AND due = 0;
END
$$;
"#,
    // 13: projection version 8. The indexes of follow-ups and slots by day
    // go (the report counts them from the day tallies since version 5;
    // nothing else reads them), and the index the overdue count reads
    // keeps only the slots whose span on the list is not empty: a slot
    // settled before it was due (three in four) is on no day's list.
    r#"
DROP INDEX followups_at;
DROP INDEX slots_deadline;
DROP INDEX slots_open;
CREATE INDEX slots_open ON slots (settled_on) INCLUDE (due_from, deadline, office)
    WHERE settled_on > due_from;
"#,
    // 14: snapshots are stored deflated (`keqing_shared::packed`); `size` keeps the
    // unpacked length a pull's budget reads (null for a row written before,
    // whose snapshot is stored as it was: its length is its size).
    "ALTER TABLE documents ADD COLUMN size BIGINT;",
    // 15: projection version 9. A dossier's records are keyed by
    // `(dossier_id, id)`: one index instead of the key on the record id
    // (random, a page written for each row) and the index on the dossier.
    r#"
ALTER TABLE calls DROP CONSTRAINT calls_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX calls_dossier;
ALTER TABLE visits DROP CONSTRAINT visits_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX visits_dossier;
ALTER TABLE purchases DROP CONSTRAINT purchases_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX purchases_dossier;
ALTER TABLE followups DROP CONSTRAINT followups_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX followups_dossier;
ALTER TABLE contacts DROP CONSTRAINT contacts_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX contacts_dossier;
ALTER TABLE problems DROP CONSTRAINT problems_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX problems_dossier;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX deliveries_dossier;
ALTER TABLE staff_events DROP CONSTRAINT staff_events_pkey, ADD PRIMARY KEY (dossier_id, id);
DROP INDEX staff_events_dossier;
"#,
    // 16: the overdue count is an interval stabbing query: the slots whose
    // open span `(deadline, settled_on)` holds the day. The B-tree on
    // `settled_on` read every slot settling after the day, the ones due
    // later too (~1M at 1M dossiers, for ~8k overdue); a GiST index over
    // the spans reads about the answer. The span's bounds compare as the
    // dates' text in the "C" collation, and so does the predicate that
    // keeps empty spans (settled by the deadline: most slots) out.
    r#"
CREATE TYPE keqing_day_span AS RANGE (subtype = text, collation = "C");
DROP INDEX slots_open;
CREATE INDEX slots_overdue ON slots USING gist (keqing_day_span(deadline, settled_on, '()'))
    WHERE settled_on COLLATE "C" > deadline COLLATE "C";
"#,
    // 17: the two tables with most rows a dossier (~14 slots, ~10
    // follow-ups) hold the dossier as a 4-byte key of `dossier_keys`
    // instead of its 36-character id, in the row and in the primary key
    // (~33 bytes less each time), a slot's times as `timestamp`, and
    // counters and flags as `integer` / `smallint`, laid out before the
    // text: ~2.5 KB a dossier of the 10k benchmark's ~12. `slots` and
    // `followups` stay, as views with the documented columns and types
    // (docs/reporting-schema.md); only the store's writer, erasure, reset
    // and VACUUM name `slot_rows` and `followup_rows`. The
    // views join the keys with LEFT JOIN on their primary key, so a query
    // that does not read `dossier_id` does not read `dossier_keys` either.
    r#"
CREATE TABLE dossier_keys (
    key INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    dossier_id TEXT NOT NULL UNIQUE
);
INSERT INTO dossier_keys (dossier_id)
    SELECT dossier_id FROM slots UNION SELECT dossier_id FROM followups ORDER BY 1;
-- A slot's times as `timestamp` (8 bytes, not 20), first, so they need no
-- padding. A stored time PostgreSQL cannot hold (before 4713 BC: only a
-- hostile device's) is -infinity, as the writer sends it.
CREATE FUNCTION keqing_stored_time(t TEXT) RETURNS TIMESTAMP LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::TIMESTAMP;
EXCEPTION WHEN OTHERS THEN
    RETURN CASE WHEN t IS NULL THEN NULL ELSE '-infinity'::TIMESTAMP END;
END
$$;
CREATE TABLE slot_rows (
    anchor TIMESTAMP NOT NULL,
    satisfied_at TIMESTAMP,
    closed_at TIMESTAMP,
    dossier INTEGER NOT NULL,
    n INTEGER NOT NULL,
    day INTEGER,
    due_counted SMALLINT NOT NULL,
    on_time SMALLINT NOT NULL,
    cadence TEXT NOT NULL,
    reason TEXT NOT NULL,
    due_from TEXT NOT NULL,
    deadline TEXT NOT NULL,
    settled_on TEXT NOT NULL,
    office TEXT NOT NULL,
    PRIMARY KEY (dossier, n)
);
INSERT INTO slot_rows
    SELECT keqing_stored_time(s.anchor), keqing_stored_time(s.satisfied_at),
           keqing_stored_time(s.closed_at), k.key, s.n, s.day, s.due_counted, s.on_time,
           s.cadence, s.reason, s.due_from, s.deadline, s.settled_on, s.office
    FROM slots s JOIN dossier_keys k USING (dossier_id);
DROP FUNCTION keqing_stored_time(TEXT);
CREATE TABLE followup_rows (
    dossier INTEGER NOT NULL,
    on_time SMALLINT NOT NULL,
    id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    kind TEXT NOT NULL,
    office TEXT NOT NULL,
    PRIMARY KEY (dossier, id)
);
INSERT INTO followup_rows
    SELECT k.key, f.on_time, f.id, f.at, f.staff, f.kind, f.office
    FROM followups f JOIN dossier_keys k USING (dossier_id);
-- The tallies are already counted: their triggers move to the new tables
-- after the copy (the functions taking the old tables' row types go with
-- them).
DROP TABLE slots CASCADE;
DROP TABLE followups CASCADE;
CREATE FUNCTION keqing_tally_followup(f followup_rows, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO followup_tallies VALUES (left(f.at, 10), f.office, f.staff, delta,
        CASE WHEN f.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (day, office, staff) DO UPDATE SET
        done = followup_tallies.done + excluded.done,
        on_time = followup_tallies.on_time + excluded.on_time;
    DELETE FROM followup_tallies WHERE day = left(f.at, 10) AND office = f.office
        AND staff = f.staff AND done = 0;
END
$$;
CREATE FUNCTION keqing_tally_slot(s slot_rows, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO slot_tallies VALUES (s.deadline, s.office, delta,
        CASE WHEN s.on_time <> 0 THEN delta ELSE 0 END,
        CASE WHEN s.cadence = 'not_visited' THEN delta ELSE 0 END,
        CASE WHEN s.cadence = 'not_visited' AND s.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (deadline, office) DO UPDATE SET
        due = slot_tallies.due + excluded.due,
        due_on_time = slot_tallies.due_on_time + excluded.due_on_time,
        not_visited_due = slot_tallies.not_visited_due + excluded.not_visited_due,
        not_visited_on_time = slot_tallies.not_visited_on_time + excluded.not_visited_on_time;
    DELETE FROM slot_tallies WHERE deadline = s.deadline AND office = s.office AND due = 0;
END
$$;
CREATE TRIGGER followup_tallies AFTER INSERT OR UPDATE OR DELETE ON followup_rows
    FOR EACH ROW EXECUTE FUNCTION keqing_followup_tallies();
CREATE TRIGGER slot_tallies AFTER INSERT OR UPDATE OR DELETE ON slot_rows
    FOR EACH ROW EXECUTE FUNCTION keqing_slot_tallies();
CREATE INDEX slots_overdue ON slot_rows USING gist (keqing_day_span(deadline, settled_on, '()'))
    WHERE settled_on COLLATE "C" > deadline COLLATE "C";
CREATE VIEW slots AS
    SELECT k.dossier_id, s.n::BIGINT AS n, s.cadence, s.reason, s.day::BIGINT AS day,
           to_char(s.anchor, 'YYYY-MM-DD"T"HH24:MI:SS') AS anchor, s.due_from, s.deadline,
           to_char(s.satisfied_at, 'YYYY-MM-DD"T"HH24:MI:SS') AS satisfied_at,
           to_char(s.closed_at, 'YYYY-MM-DD"T"HH24:MI:SS') AS closed_at, s.settled_on,
           s.office, s.due_counted::BIGINT AS due_counted, s.on_time::BIGINT AS on_time
    FROM slot_rows s LEFT JOIN dossier_keys k ON k.key = s.dossier;
CREATE VIEW followups AS
    SELECT f.id, k.dossier_id, f.at, f.staff, f.kind, f.on_time::BIGINT AS on_time, f.office
    FROM followup_rows f LEFT JOIN dossier_keys k ON k.key = f.dossier;
-- A reporting role made before keeps reading what it read.
DO $$
DECLARE r RECORD;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles
             WHERE shobj_description(oid, 'pg_authid') = 'keqing read-only reporting role' LOOP
        EXECUTE format('GRANT SELECT ON slots, followups TO %I', r.rolname);
    END LOOP;
END
$$;
"#,
    // 18: a dossier's table digests (what the projector compares to skip
    // the tables a change left as they were) live in its row of
    // `dossier_keys`: one row a dossier, with its key, instead of a second
    // table keyed by the 36-character id (~130 bytes a dossier).
    r#"
ALTER TABLE dossier_keys ADD COLUMN digests BYTEA;
INSERT INTO dossier_keys (dossier_id, digests)
    SELECT dossier_id, digests FROM projection_digests ORDER BY dossier_id
    ON CONFLICT (dossier_id) DO UPDATE SET digests = excluded.digests;
DROP TABLE projection_digests;
"#,
    // 19: a slot's cadence and reason (~40 bytes of text, of a few hundred
    // distinct pairs: the reason names the cadence's day or the run-out
    // date) as a 4-byte key of `slot_kinds`, ~40 bytes less in each of a
    // dossier's ~14 slot rows. The view `slots` shows them as before.
    r#"
CREATE TABLE slot_kinds (
    kind INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    cadence TEXT NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (cadence, reason)
);
INSERT INTO slot_kinds (cadence, reason)
    SELECT DISTINCT cadence, reason FROM slot_rows ORDER BY 1, 2;
CREATE TABLE slot_rows_by_kind (
    anchor TIMESTAMP NOT NULL,
    satisfied_at TIMESTAMP,
    closed_at TIMESTAMP,
    dossier INTEGER NOT NULL,
    n INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    day INTEGER,
    due_counted SMALLINT NOT NULL,
    on_time SMALLINT NOT NULL,
    due_from TEXT NOT NULL,
    deadline TEXT NOT NULL,
    settled_on TEXT NOT NULL,
    office TEXT NOT NULL
);
INSERT INTO slot_rows_by_kind
    SELECT s.anchor, s.satisfied_at, s.closed_at, s.dossier, s.n, k.kind, s.day,
           s.due_counted, s.on_time, s.due_from, s.deadline, s.settled_on, s.office
    FROM slot_rows s JOIN slot_kinds k USING (cadence, reason);
-- The view, the trigger, the index and the tally function go with the
-- old table; the tallies are already counted.
DROP TABLE slot_rows CASCADE;
ALTER TABLE slot_rows_by_kind RENAME TO slot_rows;
ALTER TABLE slot_rows ADD CONSTRAINT slot_rows_pkey PRIMARY KEY (dossier, n);
CREATE FUNCTION keqing_tally_slot(s slot_rows, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    not_visited BOOLEAN := (SELECT cadence = 'not_visited' FROM slot_kinds WHERE kind = s.kind);
BEGIN
    INSERT INTO slot_tallies VALUES (s.deadline, s.office, delta,
        CASE WHEN s.on_time <> 0 THEN delta ELSE 0 END,
        CASE WHEN not_visited THEN delta ELSE 0 END,
        CASE WHEN not_visited AND s.on_time <> 0 THEN delta ELSE 0 END)
    ON CONFLICT (deadline, office) DO UPDATE SET
        due = slot_tallies.due + excluded.due,
        due_on_time = slot_tallies.due_on_time + excluded.due_on_time,
        not_visited_due = slot_tallies.not_visited_due + excluded.not_visited_due,
        not_visited_on_time = slot_tallies.not_visited_on_time + excluded.not_visited_on_time;
    DELETE FROM slot_tallies WHERE deadline = s.deadline AND office = s.office AND due = 0;
END
$$;
-- A slot's kind counts only through its cadence: two kinds of one cadence
-- count alike.
CREATE OR REPLACE FUNCTION keqing_slot_tallies() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.due_counted = 1, OLD.deadline, OLD.office, OLD.on_time <> 0,
            (SELECT cadence = 'not_visited' FROM slot_kinds WHERE kind = OLD.kind))
        IS NOT DISTINCT FROM (NEW.due_counted = 1, NEW.deadline, NEW.office, NEW.on_time <> 0,
            (SELECT cadence = 'not_visited' FROM slot_kinds WHERE kind = NEW.kind)) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.due_counted = 1 THEN
        PERFORM keqing_tally_slot(OLD, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.due_counted = 1 THEN
        PERFORM keqing_tally_slot(NEW, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER slot_tallies AFTER INSERT OR UPDATE OR DELETE ON slot_rows
    FOR EACH ROW EXECUTE FUNCTION keqing_slot_tallies();
CREATE INDEX slots_overdue ON slot_rows USING gist (keqing_day_span(deadline, settled_on, '()'))
    WHERE settled_on COLLATE "C" > deadline COLLATE "C";
CREATE VIEW slots AS
    SELECT k.dossier_id, s.n::BIGINT AS n, sk.cadence, sk.reason, s.day::BIGINT AS day,
           to_char(s.anchor, 'YYYY-MM-DD"T"HH24:MI:SS') AS anchor, s.due_from, s.deadline,
           to_char(s.satisfied_at, 'YYYY-MM-DD"T"HH24:MI:SS') AS satisfied_at,
           to_char(s.closed_at, 'YYYY-MM-DD"T"HH24:MI:SS') AS closed_at, s.settled_on,
           s.office, s.due_counted::BIGINT AS due_counted, s.on_time::BIGINT AS on_time
    FROM slot_rows s
    LEFT JOIN dossier_keys k ON k.key = s.dossier
    LEFT JOIN slot_kinds sk ON sk.kind = s.kind;
DO $$
DECLARE r RECORD;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles
             WHERE shobj_description(oid, 'pg_authid') = 'keqing read-only reporting role' LOOP
        EXECUTE format('GRANT SELECT ON slots TO %I', r.rolname);
    END LOOP;
END
$$;
"#,
    // 20: projection version 10 is SQLite's: its overdue count moves from
    // an R*Tree to day tallies. Here the GiST index of migration 16 keeps
    // answering it, flat in the store's size; nothing to change.
    "-- projection version 10: nothing changes on PostgreSQL",
    // 21: projection version 11 puts SQLite's table digests in a dossier's
    // patient row; here they have been in its `dossier_keys` row since
    // migration 18.
    "-- projection version 11: nothing changes on PostgreSQL",
];

/// The projection version the tables of [`MIGRATIONS`] hold; a new
/// projection version is a new migration here too.
pub const PROJECTION_VERSION: u32 = 11;

/// Brings the database to the newest schema (making the store if there is
/// none); refuses one a newer keqing-server made.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keqing_schema (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM keqing_schema", &[])
        .await?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::NewerSchema(format!(
            "schema version {current} (this keqing-server knows {known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await.map_err(|e| {
            // The database's own message (`db error` alone otherwise).
            let why = e
                .as_db_error()
                .map_or(e.to_string(), |d| d.message().to_string());
            StoreError::Migration(format!("migration {}: {why}", i + 1))
        })?;
        tx.execute(
            "INSERT INTO keqing_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether the database holds a keqing-server store (without making one).
pub(super) async fn has_store(client: &tokio_postgres::Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regclass('keqing_schema') IS NOT NULL
                AND EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'changes')",
            &[],
        )
        .await?
        .get(0))
}

// Both stores hold the same projection version.
const _: () = assert!(PROJECTION_VERSION == keqing_projection::SCHEMA_VERSION);

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// The migrations that replace a documented table by a view grant it
    /// again to the reporting roles there are, found by the comment
    /// `reporting-role` gives them (the text must not drift from it).
    #[test]
    fn migrations_find_reporting_roles_by_the_comment_they_are_given() {
        let granting: Vec<&str> = MIGRATIONS
            .iter()
            .copied()
            .filter(|m| m.contains("GRANT SELECT ON"))
            .collect();
        assert_eq!(granting.len(), 2);
        let marked = format!(
            "shobj_description(oid, 'pg_authid') = '{}'",
            super::super::REPORTING_ROLE_COMMENT
        );
        for m in granting {
            assert!(m.contains(&marked), "{m}");
        }
    }
}
