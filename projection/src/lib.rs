//! # keqing-projection: dossiers as SQL rows
//!
//! Automerge documents are the truth; these tables are what SQL can query
//! (the due list, lookups, reports), derived from them and rebuildable at
//! any time. The office replica and the server's projector keep the very
//! same tables with the same code, so a report read at an office and at
//! headquarters comes from identical rows.
//!
//! This crate is one of the store modules: it writes SQL, on a connection
//! (or transaction) its caller owns. It does no other IO.

use chrono::NaiveDate;
use keqing_shared::dossier::DossierView;
use keqing_shared::followup::{Cadence, Slot};
use keqing_shared::lists::Category;
use keqing_shared::report::{
    CallFact, CategoryCounts, FollowUpTally, MarkCounts, NonPatientFact, PurchaseFact,
    PurchaseOrder, ReportRows, SlotCounts, VisitFact,
};
use keqing_shared::staff::Staff;
use keqing_shared::when::{fmt_date, fmt_datetime, read_stored_date, read_stored_datetime};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod patients;
pub mod rows;
pub mod statements;

pub use rows::{Cell, Row, Table, rows_digest};
pub use statements::TableSql;

pub type Result<T> = rusqlite::Result<T>;

// The projection schema, by version. A version's text is frozen once
// released: stores reach it through migrations that must give the same
// tables forever (a migration is never edited after it ships; the hashes
// in `tests::released_schema_texts_are_frozen` fail if one is). A change
// to the projection is a new version: a new frozen text, and in both
// stores a new migration that drops the old tables and creates the new
// ones, after which the rows are derived again from the documents.
//
// What the tables hold, beside the rows themselves:
// - The report indexes: each covers what its report query reads, so a range
//   of days is read from one index without visiting the table rows.
// - The day's follow-up list and the overdue count are interval stabbing
// queries: the slots whose span on the list `[due_from, settled_on)`
// contains the day. An R*Tree over the spans (days since 2000-01-01,
// exact in `rtree_i32`) finds them in O(log n + answer). Its two more
// dimensions, the deadline and the office code (both points), let the
// overdue count read nothing but R*Tree nodes, and narrow a province's
// count by office. Triggers keep it in step with `slots`. A slot settled
// before it was due has an empty span, which no day stabs: the R*Tree
// leaves it out (three slots in four). It names a slot by its rowid,
// which `slots` does not declare: SQLite's VACUUM keeps such rowids (it
// copies rows as they are), though its documentation allows it not to;
// `the_span_tree_holds_exactly_the_slots_a_day_can_find` pins it for the
// bundled SQLite.
// - Per dossier, a digest of the rows each projection table holds for it
// (8 bytes per table, in the order `project_dossier` writes them). Every
// edit derives all of a dossier's rows again; only tables whose digest
// changed are read and compared, so a call added to a two-year history
// touches `patients` and `calls`, not ~150 rows of follow-ups and slots.
// Kept in the dossier's `patients` row (since version 11; a table of
// their own before), which every dossier has exactly one of.
// A cache of the projection: cleared with it. Every row of a dossier's
// tables is keyed by its dossier (since version 9), so no other dossier's
// write can change the rows a digest describes.

/// The text of [`V1_TABLES`]; frozen (its hash is pinned in a test).
macro_rules! v1_tables {
    () => {
        r#"
CREATE TABLE staff (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    active INTEGER NOT NULL,
    office TEXT NOT NULL DEFAULT ''
);
CREATE TABLE patients (
    dossier_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    name TEXT NOT NULL,
    sex TEXT,
    age INTEGER,
    address TEXT,
    diseases TEXT NOT NULL,
    created_at TEXT NOT NULL,
    typical INTEGER NOT NULL,
    merged_into TEXT,
    conflicts INTEGER NOT NULL,
    phone TEXT,
    typical_at TEXT
) WITHOUT ROWID;
CREATE INDEX patients_name_age ON patients(name, age);
CREATE INDEX patients_typical ON patients(typical_at) WHERE typical = 1;
CREATE TABLE patient_phones (
    phone TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    PRIMARY KEY (phone, dossier_id)
) WITHOUT ROWID;
CREATE INDEX patient_phones_dossier ON patient_phones(dossier_id);
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    caller_phone TEXT NOT NULL,
    source TEXT NOT NULL,
    disease TEXT,
    office TEXT NOT NULL DEFAULT ''
);
CREATE INDEX calls_dossier ON calls(dossier_id);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchased INTEGER NOT NULL,
    office TEXT NOT NULL DEFAULT ''
);
CREATE INDEX visits_dossier ON visits(dossier_id);
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    product TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    runout TEXT,
    nth INTEGER NOT NULL DEFAULT 1,
    prev_runout TEXT,
    office TEXT NOT NULL DEFAULT ''
);
CREATE INDEX purchases_dossier ON purchases(dossier_id);
CREATE TABLE followups (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    kind TEXT NOT NULL,
    on_time INTEGER NOT NULL DEFAULT 0,
    office TEXT NOT NULL DEFAULT ''
);
CREATE INDEX followups_dossier ON followups(dossier_id);
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL
);
CREATE INDEX contacts_dossier ON contacts(dossier_id);
CREATE TABLE problems (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    resolved_at TEXT,
    office TEXT NOT NULL DEFAULT ''
);
CREATE INDEX problems_dossier ON problems(dossier_id);
CREATE TABLE slots (
    dossier_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    cadence TEXT NOT NULL,
    reason TEXT NOT NULL,
    day INTEGER,
    anchor TEXT NOT NULL,
    due_from TEXT NOT NULL,
    deadline TEXT NOT NULL,
    satisfied_at TEXT,
    closed_at TEXT,
    settled_on TEXT,
    office TEXT NOT NULL DEFAULT '',
    due_counted INTEGER NOT NULL DEFAULT 0,
    on_time INTEGER NOT NULL DEFAULT 0,
    UNIQUE (dossier_id, n)
);

CREATE INDEX calls_at ON calls(at, office, dossier_id, staff, source, disease);
CREATE INDEX visits_at ON visits(at, office, dossier_id, staff, purchased);
CREATE INDEX purchases_at ON purchases(at, office, dossier_id, staff, amount_fen, nth, prev_runout);
CREATE INDEX followups_at ON followups(at, office, dossier_id, staff, on_time);
CREATE INDEX slots_deadline ON slots(deadline, office, due_counted, on_time, cadence);

CREATE VIRTUAL TABLE slot_spans USING rtree_i32(id, first_day, settled_day,
    deadline_day, deadline_day_, office_code, office_code_);
CREATE TRIGGER slot_spans_insert AFTER INSERT ON slots BEGIN
    INSERT INTO slot_spans VALUES (new.rowid,
        CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        max(CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
            CAST(julianday(new.due_from) - 2451544.5 AS INTEGER)),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(new.office AS INTEGER), CAST(new.office AS INTEGER));
END;
CREATE TRIGGER slot_spans_update AFTER UPDATE OF due_from, settled_on, deadline, office ON slots BEGIN
    UPDATE slot_spans SET
        first_day = CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        settled_day = max(CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
                          CAST(julianday(new.due_from) - 2451544.5 AS INTEGER)),
        deadline_day = CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        deadline_day_ = CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        office_code = CAST(new.office AS INTEGER),
        office_code_ = CAST(new.office AS INTEGER)
    WHERE id = new.rowid;
END;
CREATE TRIGGER slot_spans_delete AFTER DELETE ON slots BEGIN
    DELETE FROM slot_spans WHERE id = old.rowid;
END;
"#
    };
}

/// The text of [`V1_DIGESTS`]; frozen.
macro_rules! v1_digests {
    () => {
        "
CREATE TABLE projection_digests (
    dossier_id TEXT PRIMARY KEY,
    digests BLOB NOT NULL
) WITHOUT ROWID;
"
    };
}

/// Version 1 of the projection tables, as the server's second migration
/// and a replica's first ones created them at commit e123ed7. Stores made
/// by earlier releases hold older shapes of them (the R*Tree had other
/// dimensions before 3885f6e); [`REPLACE_WITH_V2`] brings every one to
/// today's. Frozen.
pub const V1_TABLES: &str = v1_tables!();

/// The per-dossier digests table of version 1, added by a migration of
/// its own in both stores. Frozen.
pub const V1_DIGESTS: &str = v1_digests!();

/// Version 2, the projection tables a store has now: version 1's tables
/// and digests, reached by every store whatever shape its history left.
macro_rules! v2_tables {
    () => {
        concat!(v1_tables!(), v1_digests!())
    };
}

/// The migration to version 2: drops every projection table any earlier
/// version had (their indexes and triggers, and the R*Tree's own tables,
/// go with them) and creates version 2's, empty. The store derives the
/// rows again from its documents afterwards. Frozen.
pub const REPLACE_WITH_V2: &str = concat!(
    r#"
DROP TABLE IF EXISTS slot_spans;
DROP TABLE IF EXISTS staff;
DROP TABLE IF EXISTS patients;
DROP TABLE IF EXISTS patient_phones;
DROP TABLE IF EXISTS calls;
DROP TABLE IF EXISTS visits;
DROP TABLE IF EXISTS purchases;
DROP TABLE IF EXISTS followups;
DROP TABLE IF EXISTS contacts;
DROP TABLE IF EXISTS problems;
DROP TABLE IF EXISTS slots;
DROP TABLE IF EXISTS projection_digests;
"#,
    v2_tables!()
);

/// What version 3 adds to version 2 (the office's whole day): each
/// patient's category, lapse date, flags, assignee, last contact and next
/// entry point (the lists and the due list by person); the reason a visit
/// did not buy; deliveries with their goods and status; non-patient calls.
/// The lists' indexes cover their queries: each holds every column its
/// query names, `merged_into` too (SQLite reads the row for a column the
/// query names that the index lacks, even one its condition implies).
macro_rules! v3_additions {
    () => {
        r#"
ALTER TABLE patients ADD COLUMN category TEXT NOT NULL DEFAULT 'not_visited';
ALTER TABLE patients ADD COLUMN lapses_on TEXT;
ALTER TABLE patients ADD COLUMN assignee TEXT;
ALTER TABLE patients ADD COLUMN open_problems INTEGER NOT NULL DEFAULT 0;
ALTER TABLE patients ADD COLUMN last_contact TEXT;
ALTER TABLE patients ADD COLUMN next_entry TEXT;
CREATE INDEX patients_category
    ON patients(office, category, lapses_on, typical, open_problems, merged_into)
    WHERE merged_into IS NULL;
CREATE INDEX patients_list
    ON patients(category, last_contact, dossier_id, lapses_on, office, merged_into)
    WHERE merged_into IS NULL;
CREATE INDEX patients_list_typical
    ON patients(last_contact, dossier_id, office, typical, merged_into)
    WHERE typical = 1 AND merged_into IS NULL;
CREATE INDEX patients_list_problem
    ON patients(last_contact, dossier_id, office, open_problems, merged_into)
    WHERE open_problems > 0 AND merged_into IS NULL;
CREATE INDEX patients_assignee ON patients(assignee) WHERE assignee IS NOT NULL;
ALTER TABLE visits ADD COLUMN reason TEXT;
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    office TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchase TEXT,
    product TEXT,
    quantity INTEGER,
    address TEXT,
    due TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    settled_at TEXT
);
CREATE INDEX deliveries_dossier ON deliveries(dossier_id);
CREATE INDEX deliveries_open ON deliveries(status, due, office);
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
CREATE INDEX nonpatient_calls_log ON nonpatient_calls(log_id);
CREATE INDEX nonpatient_calls_at ON nonpatient_calls(at, office, kind, staff);
"#
    };
}

/// Version 3: version 2 and [its additions](v3_additions).
macro_rules! v3_tables {
    () => {
        concat!(v1_tables!(), v1_digests!(), v3_additions!())
    };
}

/// The migration to version 3: drops every projection table of versions 1
/// to 3 and creates version 3's, empty; the store derives the rows again.
/// Frozen.
pub const REPLACE_WITH_V3: &str = concat!(
    r#"
DROP TABLE IF EXISTS slot_spans;
DROP TABLE IF EXISTS staff;
DROP TABLE IF EXISTS patients;
DROP TABLE IF EXISTS patient_phones;
DROP TABLE IF EXISTS calls;
DROP TABLE IF EXISTS visits;
DROP TABLE IF EXISTS purchases;
DROP TABLE IF EXISTS followups;
DROP TABLE IF EXISTS contacts;
DROP TABLE IF EXISTS problems;
DROP TABLE IF EXISTS slots;
DROP TABLE IF EXISTS projection_digests;
DROP TABLE IF EXISTS deliveries;
DROP TABLE IF EXISTS nonpatient_calls;
"#,
    v3_tables!()
);

/// The statements that fill each table the projection's triggers keep
/// (the tallies, the R*Tree of spans) from the rows it is derived from: in
/// the migrations that added them, and after a bulk load that set the
/// triggers aside ([`restore_indexes`]). One text each, so the two agree.
macro_rules! fill_category_tallies {
    () => {
        concat!(
            "INSERT INTO category_tallies\n",
            category_tally_rows!(),
            ";\n"
        )
    };
}

/// The rows of `category_tallies` counted from `patients` (a query).
macro_rules! category_tally_rows {
    () => {
        "SELECT office, category, coalesce(lapses_on, ''), count(*), sum(typical = 1), sum(open_problems > 0)
FROM patients WHERE merged_into IS NULL
GROUP BY office, category, coalesce(lapses_on, '')"
    };
}

/// See [`fill_category_tallies`].
macro_rules! fill_followup_tallies {
    () => {
        concat!(
            "INSERT INTO followup_tallies\n",
            followup_tally_rows!(),
            ";\n"
        )
    };
}

/// The rows of `followup_tallies` counted from `followups` (a query).
macro_rules! followup_tally_rows {
    () => {
        "SELECT substr(at, 1, 10), office, staff, count(*), sum(on_time) FROM followups
GROUP BY substr(at, 1, 10), office, staff"
    };
}

/// See [`fill_category_tallies`].
macro_rules! fill_slot_tallies {
    () => {
        concat!("INSERT INTO slot_tallies\n", slot_tally_rows!(), ";\n")
    };
}

/// The rows of `slot_tallies` counted from `slots` (a query).
macro_rules! slot_tally_rows {
    () => {
        "SELECT deadline, office, count(*), sum(on_time), sum(cadence = 'not_visited'),
       sum(cadence = 'not_visited' AND on_time)
FROM slots WHERE due_counted = 1 GROUP BY deadline, office"
    };
}

/// See [`fill_category_tallies`]: the spans the v8 triggers would have
/// written, those not empty.
macro_rules! fill_slot_spans {
    () => {
        "INSERT INTO slot_spans SELECT rowid,
    CAST(julianday(due_from) - 2451544.5 AS INTEGER),
    CAST(julianday(settled_on) - 2451544.5 AS INTEGER),
    CAST(julianday(deadline) - 2451544.5 AS INTEGER),
    CAST(julianday(deadline) - 2451544.5 AS INTEGER),
    CAST(office AS INTEGER), CAST(office AS INTEGER)
FROM slots WHERE settled_on > due_from;
"
    };
}

/// The day a slot starts to be overdue (the day after its deadline, or
/// the day it comes on the list if later) as SQL over a `slots` row
/// named `$r`: it is overdue on the days from then until `settled_on`.
/// NULL for a deadline SQLite cannot read as a date (never counted).
macro_rules! overdue_from {
    ($r:literal) => {
        concat!("max(", $r, ".due_from, date(", $r, ".deadline, '+1 day'))")
    };
}

/// What a slot row named `$r` adds to `overdue_tallies` (a trigger's body).
macro_rules! overdue_tally_add {
    ($r:literal) => {
        concat!(
            "
    INSERT INTO overdue_tallies VALUES (",
            overdue_from!($r),
            ", ",
            $r,
            ".office, 1, 0)
    ON CONFLICT DO UPDATE SET opened = opened + 1;
    INSERT INTO overdue_tallies VALUES (",
            $r,
            ".settled_on, ",
            $r,
            ".office, 0, 1)
    ON CONFLICT DO UPDATE SET settled = settled + 1;
"
        )
    };
}

/// What a slot row named `$r` takes from `overdue_tallies` (a trigger's
/// body); rows that come to zero go.
macro_rules! overdue_tally_remove {
    ($r:literal) => {
        concat!(
            "
    UPDATE overdue_tallies SET opened = opened - 1
    WHERE day = ",
            overdue_from!($r),
            " AND office = ",
            $r,
            ".office;
    UPDATE overdue_tallies SET settled = settled - 1
    WHERE day = ",
            $r,
            ".settled_on AND office = ",
            $r,
            ".office;
    DELETE FROM overdue_tallies WHERE day IN (",
            overdue_from!($r),
            ", ",
            $r,
            ".settled_on)
        AND office = ",
            $r,
            ".office AND opened = 0 AND settled = 0;
"
        )
    };
}

/// Whether an update changed what `overdue_tallies` counts of a slot.
macro_rules! overdue_moved {
    () => {
        "old.due_from IS NOT new.due_from OR old.deadline IS NOT new.deadline
    OR old.settled_on IS NOT new.settled_on OR old.office IS NOT new.office"
    };
}

/// The triggers that keep `overdue_tallies` in step with `slots`: a slot
/// overdue on some day (`overdue_from < settled_on`) counts one `opened`
/// on the day it becomes overdue and one `settled` on the day it leaves
/// the list.
macro_rules! overdue_tally_triggers {
    () => {
        concat!(
            "CREATE TRIGGER overdue_tallies_insert AFTER INSERT ON slots
WHEN ", overdue_from!("new"), " < new.settled_on BEGIN", overdue_tally_add!("new"), "END;
CREATE TRIGGER overdue_tallies_delete AFTER DELETE ON slots
WHEN ", overdue_from!("old"), " < old.settled_on BEGIN", overdue_tally_remove!("old"), "END;
CREATE TRIGGER overdue_tallies_update_old AFTER UPDATE OF due_from, deadline, settled_on, office ON slots
WHEN ", overdue_from!("old"), " < old.settled_on AND (", overdue_moved!(), ") BEGIN",
            overdue_tally_remove!("old"), "END;
CREATE TRIGGER overdue_tallies_update_new AFTER UPDATE OF due_from, deadline, settled_on, office ON slots
WHEN ", overdue_from!("new"), " < new.settled_on AND (", overdue_moved!(), ") BEGIN",
            overdue_tally_add!("new"), "END;
"
        )
    };
}

/// See [`fill_category_tallies`].
macro_rules! fill_overdue_tallies {
    () => {
        concat!(
            "INSERT INTO overdue_tallies\n",
            overdue_tally_rows!(),
            ";\n"
        )
    };
}

/// The rows of `overdue_tallies` counted from `slots` (a query).
macro_rules! overdue_tally_rows {
    () => {
        concat!(
            "SELECT day, office, sum(opened), sum(settled) FROM (
    SELECT ",
            overdue_from!("s"),
            " AS day, office, 1 AS opened, 0 AS settled
    FROM slots s WHERE ",
            overdue_from!("s"),
            " < settled_on
    UNION ALL
    SELECT settled_on, office, 0, 1
    FROM slots s WHERE ",
            overdue_from!("s"),
            " < settled_on
) GROUP BY day, office"
        )
    };
}

/// One table the projection's triggers keep.
struct Kept {
    table: &'static str,
    /// The statement that fills it from the rows it follows.
    fill: &'static str,
    /// The query of its rows, for a reader to count them beside the writer
    /// ([`restore_indexes_beside`]): a tally's few thousand rows, sorted
    /// out of millions. `None` for the R*Tree, a row for each open span.
    rows: Option<&'static str>,
}

/// Each table the projection's triggers keep: the tallies in the order of
/// their cost at 100k dossiers (~1.4, 1.1, 1.0 and 0.1 s; at 1M 28.7,
/// 13.3, 27.4 and 0.5 s), then the R*Tree of spans.
const TRIGGER_KEPT: [Kept; 5] = [
    Kept {
        table: "slot_tallies",
        fill: fill_slot_tallies!(),
        rows: Some(slot_tally_rows!()),
    },
    Kept {
        table: "overdue_tallies",
        fill: fill_overdue_tallies!(),
        rows: Some(overdue_tally_rows!()),
    },
    Kept {
        table: "followup_tallies",
        fill: fill_followup_tallies!(),
        rows: Some(followup_tally_rows!()),
    },
    Kept {
        table: "category_tallies",
        fill: fill_category_tallies!(),
        rows: Some(category_tally_rows!()),
    },
    Kept {
        table: "slot_spans",
        fill: fill_slot_spans!(),
        rows: None,
    },
];

/// What version 4 adds to version 3: the category tallies. A report's
/// category figures (how many live dossiers stand in each category, have
/// lapsed by a day, carry each flag) were one pass over every patient, a
/// cost that grew with the archive (1.4 s of a national report at 1M
/// dossiers). The tallies hold the same counts per office, category and
/// lapse date (a few thousand rows at any size), kept in step with
/// `patients` by triggers, so the report reads them instead. Derived from
/// `patients` alone, they are filled from it here: a store migrating to
/// version 4 keeps its rows (no projection again). `lapses_on` is '' for a
/// dossier without one (a key column cannot be NULL). Frozen.
macro_rules! v4_additions {
    () => {
        concat!(
            r#"
CREATE TABLE category_tallies (
    office TEXT NOT NULL,
    category TEXT NOT NULL,
    lapses_on TEXT NOT NULL,
    patients INTEGER NOT NULL,
    typical INTEGER NOT NULL,
    problem INTEGER NOT NULL,
    PRIMARY KEY (office, category, lapses_on)
) WITHOUT ROWID;
CREATE TRIGGER category_tallies_insert AFTER INSERT ON patients
WHEN new.merged_into IS NULL BEGIN
    INSERT INTO category_tallies VALUES (new.office, new.category,
        coalesce(new.lapses_on, ''), 1, new.typical = 1, new.open_problems > 0)
    ON CONFLICT DO UPDATE SET patients = patients + 1,
        typical = typical + excluded.typical, problem = problem + excluded.problem;
END;
CREATE TRIGGER category_tallies_delete AFTER DELETE ON patients
WHEN old.merged_into IS NULL BEGIN
    UPDATE category_tallies SET patients = patients - 1,
        typical = typical - (old.typical = 1), problem = problem - (old.open_problems > 0)
    WHERE office = old.office AND category = old.category
      AND lapses_on = coalesce(old.lapses_on, '');
    DELETE FROM category_tallies WHERE office = old.office AND category = old.category
      AND lapses_on = coalesce(old.lapses_on, '') AND patients = 0;
END;
CREATE TRIGGER category_tallies_update_old AFTER UPDATE ON patients
WHEN old.merged_into IS NULL AND (new.merged_into IS NOT NULL
    OR old.office IS NOT new.office OR old.category IS NOT new.category
    OR old.lapses_on IS NOT new.lapses_on OR (old.typical = 1) IS NOT (new.typical = 1)
    OR (old.open_problems > 0) IS NOT (new.open_problems > 0)) BEGIN
    UPDATE category_tallies SET patients = patients - 1,
        typical = typical - (old.typical = 1), problem = problem - (old.open_problems > 0)
    WHERE office = old.office AND category = old.category
      AND lapses_on = coalesce(old.lapses_on, '');
    DELETE FROM category_tallies WHERE office = old.office AND category = old.category
      AND lapses_on = coalesce(old.lapses_on, '') AND patients = 0;
END;
CREATE TRIGGER category_tallies_update_new AFTER UPDATE ON patients
WHEN new.merged_into IS NULL AND (old.merged_into IS NOT NULL
    OR old.office IS NOT new.office OR old.category IS NOT new.category
    OR old.lapses_on IS NOT new.lapses_on OR (old.typical = 1) IS NOT (new.typical = 1)
    OR (old.open_problems > 0) IS NOT (new.open_problems > 0)) BEGIN
    INSERT INTO category_tallies VALUES (new.office, new.category,
        coalesce(new.lapses_on, ''), 1, new.typical = 1, new.open_problems > 0)
    ON CONFLICT DO UPDATE SET patients = patients + 1,
        typical = typical + excluded.typical, problem = problem + excluded.problem;
END;
"#,
            fill_category_tallies!()
        )
    };
}

/// The migration to version 4 (from version 3): [its additions](v4_additions),
/// filled from the rows the store has. Frozen.
pub const V4_ADDITIONS: &str = v4_additions!();

/// The triggers that keep the follow-ups' day tallies (version 5), made
/// again by version 9 for the follow-ups' new table. Frozen.
macro_rules! followup_tally_triggers {
    () => {
        r#"CREATE TRIGGER followup_tallies_insert AFTER INSERT ON followups BEGIN
    INSERT INTO followup_tallies VALUES (substr(new.at, 1, 10), new.office, new.staff,
        1, new.on_time)
    ON CONFLICT DO UPDATE SET done = done + 1, on_time = on_time + excluded.on_time;
END;
CREATE TRIGGER followup_tallies_delete AFTER DELETE ON followups BEGIN
    UPDATE followup_tallies SET done = done - 1, on_time = on_time - old.on_time
    WHERE day = substr(old.at, 1, 10) AND office = old.office AND staff = old.staff;
    DELETE FROM followup_tallies
    WHERE day = substr(old.at, 1, 10) AND office = old.office AND staff = old.staff
      AND done = 0;
END;
CREATE TRIGGER followup_tallies_update_old AFTER UPDATE ON followups
WHEN substr(old.at, 1, 10) IS NOT substr(new.at, 1, 10) OR old.office IS NOT new.office
    OR old.staff IS NOT new.staff OR old.on_time IS NOT new.on_time BEGIN
    UPDATE followup_tallies SET done = done - 1, on_time = on_time - old.on_time
    WHERE day = substr(old.at, 1, 10) AND office = old.office AND staff = old.staff;
    DELETE FROM followup_tallies
    WHERE day = substr(old.at, 1, 10) AND office = old.office AND staff = old.staff
      AND done = 0;
END;
CREATE TRIGGER followup_tallies_update_new AFTER UPDATE ON followups
WHEN substr(old.at, 1, 10) IS NOT substr(new.at, 1, 10) OR old.office IS NOT new.office
    OR old.staff IS NOT new.staff OR old.on_time IS NOT new.on_time BEGIN
    INSERT INTO followup_tallies VALUES (substr(new.at, 1, 10), new.office, new.staff,
        1, new.on_time)
    ON CONFLICT DO UPDATE SET done = done + 1, on_time = on_time + excluded.on_time;
END;
"#
    };
}

/// What version 5 adds to version 4: the day tallies of follow-ups and
/// due slots. A 30-day national report at 1M dossiers read ~490k
/// follow-ups and ~610k slots to count them by office, staff and day
/// (0.7 s of its 1 s); the tallies hold the same counts per day (and
/// office, and staff), kept in step by triggers, so a report reads a few
/// hundred rows. Filled from the rows there are (no projection again).
/// Frozen.
macro_rules! v5_additions {
    () => {
        concat!(
            r#"
CREATE TABLE followup_tallies (
    day TEXT NOT NULL,
    office TEXT NOT NULL,
    staff TEXT NOT NULL,
    done INTEGER NOT NULL,
    on_time INTEGER NOT NULL,
    PRIMARY KEY (day, office, staff)
) WITHOUT ROWID;
"#,
            followup_tally_triggers!(),
            fill_followup_tallies!(),
            r#"CREATE TABLE slot_tallies (
    deadline TEXT NOT NULL,
    office TEXT NOT NULL,
    due INTEGER NOT NULL,
    due_on_time INTEGER NOT NULL,
    not_visited_due INTEGER NOT NULL,
    not_visited_on_time INTEGER NOT NULL,
    PRIMARY KEY (deadline, office)
) WITHOUT ROWID;
CREATE TRIGGER slot_tallies_insert AFTER INSERT ON slots WHEN new.due_counted = 1 BEGIN
    INSERT INTO slot_tallies VALUES (new.deadline, new.office, 1, new.on_time,
        new.cadence = 'not_visited', new.cadence = 'not_visited' AND new.on_time)
    ON CONFLICT DO UPDATE SET due = due + 1, due_on_time = due_on_time + excluded.due_on_time,
        not_visited_due = not_visited_due + excluded.not_visited_due,
        not_visited_on_time = not_visited_on_time + excluded.not_visited_on_time;
END;
CREATE TRIGGER slot_tallies_delete AFTER DELETE ON slots WHEN old.due_counted = 1 BEGIN
    UPDATE slot_tallies SET due = due - 1, due_on_time = due_on_time - old.on_time,
        not_visited_due = not_visited_due - (old.cadence = 'not_visited'),
        not_visited_on_time = not_visited_on_time - (old.cadence = 'not_visited' AND old.on_time)
    WHERE deadline = old.deadline AND office = old.office;
    DELETE FROM slot_tallies WHERE deadline = old.deadline AND office = old.office AND due = 0;
END;
CREATE TRIGGER slot_tallies_update_old AFTER UPDATE ON slots
WHEN old.due_counted = 1 AND (new.due_counted IS NOT 1 OR old.deadline IS NOT new.deadline
    OR old.office IS NOT new.office OR old.on_time IS NOT new.on_time
    OR old.cadence IS NOT new.cadence) BEGIN
    UPDATE slot_tallies SET due = due - 1, due_on_time = due_on_time - old.on_time,
        not_visited_due = not_visited_due - (old.cadence = 'not_visited'),
        not_visited_on_time = not_visited_on_time - (old.cadence = 'not_visited' AND old.on_time)
    WHERE deadline = old.deadline AND office = old.office;
    DELETE FROM slot_tallies WHERE deadline = old.deadline AND office = old.office AND due = 0;
END;
CREATE TRIGGER slot_tallies_update_new AFTER UPDATE ON slots
WHEN new.due_counted = 1 AND (old.due_counted IS NOT 1 OR old.deadline IS NOT new.deadline
    OR old.office IS NOT new.office OR old.on_time IS NOT new.on_time
    OR old.cadence IS NOT new.cadence) BEGIN
    INSERT INTO slot_tallies VALUES (new.deadline, new.office, 1, new.on_time,
        new.cadence = 'not_visited', new.cadence = 'not_visited' AND new.on_time)
    ON CONFLICT DO UPDATE SET due = due + 1, due_on_time = due_on_time + excluded.due_on_time,
        not_visited_due = not_visited_due + excluded.not_visited_due,
        not_visited_on_time = not_visited_on_time + excluded.not_visited_on_time;
END;
"#,
            fill_slot_tallies!()
        )
    };
}

/// The migration to version 5 (from version 4): [its additions](v5_additions),
/// filled from the rows the store has. Frozen.
pub const V5_ADDITIONS: &str = v5_additions!();

/// What version 6 changes: the report's range reads of visits and typical
/// patients become covering, like the others (the visits' index lacked the
/// not-bought reason and the typical patients' the office, so a 30-day
/// report at 1M dossiers looked up ~40k table rows one by one). Frozen.
macro_rules! v6_changes {
    () => {
        r#"
CREATE INDEX visits_report ON visits(at, office, dossier_id, staff, purchased, reason);
DROP INDEX visits_at;
CREATE INDEX patients_typical_report ON patients(typical_at, office) WHERE typical = 1;
DROP INDEX patients_typical;
"#
    };
}

/// The migration to version 6 (from version 5): [its changes](v6_changes).
/// Frozen.
pub const V6_CHANGES: &str = v6_changes!();

/// What version 7 adds: the staff events (home visits, deliveries handed
/// over, typical cases marked, problems resolved, activity participations:
/// what the staff score and the activity report count) and the offices'
/// own activities. Derived by Rust from the documents, they are created
/// empty here: a store migrating to version 7 projects its documents again
/// (the stored digests still match the older tables, so only the new rows
/// are written). Frozen.
macro_rules! v7_additions {
    () => {
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
CREATE INDEX staff_events_dossier ON staff_events(dossier_id);
CREATE INDEX staff_events_at
    ON staff_events(at, office, kind, staff, dossier_id, activity, patient_since);
CREATE TABLE activities (
    id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    starts TEXT NOT NULL,
    ends TEXT NOT NULL,
    source TEXT
);
CREATE INDEX activities_office ON activities(office);
"#
    };
}

/// The migration to version 7 (from version 6): [its additions](v7_additions),
/// empty; the store projects its documents again. Frozen.
pub const V7_ADDITIONS: &str = v7_additions!();

/// What version 8 changes: less to store and to write for each dossier.
/// - The covering indexes of follow-ups and slots by day go: since version
///   5 the report counts them from the day tallies, and nothing else reads
///   them (~1.5 KB a dossier of ~14 KB, and two index pages written at a
///   random place for each of ~24 rows a dossier).
/// - The R*Tree keeps only the slots whose span on the list is not empty.
///   Three slots in four are settled before they are due (a follow-up made
///   early, a purchase that closes the rest): their span `[due_from,
///   settled_on)` holds no day, so no stabbing query can find them. The
///   triggers write a span only when `settled_on > due_from` and move it
///   in or out when an update makes it so.
///
/// The reporting schema's tables and columns are unchanged. Frozen.
macro_rules! v8_changes {
    () => {
        r#"
DROP INDEX IF EXISTS followups_at;
DROP INDEX IF EXISTS slots_deadline;
DROP TRIGGER slot_spans_insert;
DROP TRIGGER slot_spans_update;
DROP TRIGGER slot_spans_delete;
DELETE FROM slot_spans WHERE settled_day <= first_day;
CREATE TRIGGER slot_spans_insert AFTER INSERT ON slots
WHEN new.settled_on > new.due_from BEGIN
    INSERT INTO slot_spans VALUES (new.rowid,
        CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(new.office AS INTEGER), CAST(new.office AS INTEGER));
END;
CREATE TRIGGER slot_spans_update AFTER UPDATE OF due_from, settled_on, deadline, office ON slots
BEGIN
    DELETE FROM slot_spans WHERE id = old.rowid;
    INSERT INTO slot_spans SELECT new.rowid,
        CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(new.office AS INTEGER), CAST(new.office AS INTEGER)
    WHERE new.settled_on > new.due_from;
END;
CREATE TRIGGER slot_spans_delete AFTER DELETE ON slots
WHEN old.settled_on > old.due_from BEGIN
    DELETE FROM slot_spans WHERE id = old.rowid;
END;
"#
    };
}

/// The migration to version 8 (from version 7): [its changes](v8_changes).
/// A replica that set the two indexes aside must forget them too (its
/// record of them is not part of this text). Frozen.
pub const V8_CHANGES: &str = v8_changes!();

/// What version 9 changes: a dossier's records lie together. The record
/// tables (calls, visits, purchases, follow-ups, contacts, problems,
/// deliveries, staff events) were rowid tables with a key on the record
/// id and an index on the dossier: every row written put an entry at a
/// random place of the id key (record ids are random), and one more in
/// the dossier index. In a large store each such entry is a page read and
/// written again (a new dossier's ten follow-ups, ten pages of the key
/// alone), the cost that made the projector slower as the store grew.
/// Keyed by `(dossier_id, id)` without a rowid, a dossier's rows of a
/// table are one range of one B-tree, which its writes and the
/// projection's reads by dossier find at once, and the two indexes go
/// (~1 KB a dossier of ~9). The rows are copied as they are, in key order
/// (the digests still hold, no projection again); the follow-ups' tally triggers come
/// back on the new table, whose tallies the copy leaves as they were. A
/// record's id is unique within its dossier: a merge copies records to
/// the kept dossier, whose rows now stand beside the merged dossier's
/// until the merged one (which projects no records) is written. The
/// reporting schema's tables and columns are unchanged. Frozen.
macro_rules! v9_changes {
    () => {
        concat!(
            r#"
ALTER TABLE calls RENAME TO calls_v8;
CREATE TABLE calls (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    caller_phone TEXT NOT NULL,
    source TEXT NOT NULL,
    disease TEXT,
    office TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO calls (id, dossier_id, at, staff, caller_phone, source, disease, office)
    SELECT id, dossier_id, at, staff, caller_phone, source, disease, office FROM calls_v8
    ORDER BY dossier_id, id;
DROP TABLE calls_v8;
CREATE INDEX calls_at ON calls(at, office, dossier_id, staff, source, disease);
ALTER TABLE visits RENAME TO visits_v8;
CREATE TABLE visits (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchased INTEGER NOT NULL,
    office TEXT NOT NULL DEFAULT '',
    reason TEXT,
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO visits (id, dossier_id, at, staff, purchased, office, reason)
    SELECT id, dossier_id, at, staff, purchased, office, reason FROM visits_v8
    ORDER BY dossier_id, id;
DROP TABLE visits_v8;
CREATE INDEX visits_report ON visits(at, office, dossier_id, staff, purchased, reason);
ALTER TABLE purchases RENAME TO purchases_v8;
CREATE TABLE purchases (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    product TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    runout TEXT,
    nth INTEGER NOT NULL DEFAULT 1,
    prev_runout TEXT,
    office TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO purchases (id, dossier_id, at, staff, product, quantity, amount_fen, runout, nth, prev_runout, office)
    SELECT id, dossier_id, at, staff, product, quantity, amount_fen, runout, nth, prev_runout, office FROM purchases_v8
    ORDER BY dossier_id, id;
DROP TABLE purchases_v8;
CREATE INDEX purchases_at ON purchases(at, office, dossier_id, staff, amount_fen, nth, prev_runout);
ALTER TABLE followups RENAME TO followups_v8;
CREATE TABLE followups (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    kind TEXT NOT NULL,
    on_time INTEGER NOT NULL DEFAULT 0,
    office TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO followups (id, dossier_id, at, staff, kind, on_time, office)
    SELECT id, dossier_id, at, staff, kind, on_time, office FROM followups_v8
    ORDER BY dossier_id, id;
DROP TABLE followups_v8;
ALTER TABLE contacts RENAME TO contacts_v8;
CREATE TABLE contacts (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO contacts (id, dossier_id, kind, at, staff)
    SELECT id, dossier_id, kind, at, staff FROM contacts_v8
    ORDER BY dossier_id, id;
DROP TABLE contacts_v8;
ALTER TABLE problems RENAME TO problems_v8;
CREATE TABLE problems (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    resolved_at TEXT,
    office TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO problems (id, dossier_id, at, state, resolved_at, office)
    SELECT id, dossier_id, at, state, resolved_at, office FROM problems_v8
    ORDER BY dossier_id, id;
DROP TABLE problems_v8;
ALTER TABLE deliveries RENAME TO deliveries_v8;
CREATE TABLE deliveries (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    office TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchase TEXT,
    product TEXT,
    quantity INTEGER,
    address TEXT,
    due TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    settled_at TEXT,
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO deliveries (id, dossier_id, office, at, staff, purchase, product, quantity, address, due, status, status_reason, settled_at)
    SELECT id, dossier_id, office, at, staff, purchase, product, quantity, address, due, status, status_reason, settled_at FROM deliveries_v8
    ORDER BY dossier_id, id;
DROP TABLE deliveries_v8;
CREATE INDEX deliveries_open ON deliveries(status, due, office);
ALTER TABLE staff_events RENAME TO staff_events_v8;
CREATE TABLE staff_events (
    id TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    office TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    activity TEXT,
    patient_since TEXT,
    PRIMARY KEY (dossier_id, id)
) WITHOUT ROWID;
INSERT INTO staff_events (id, dossier_id, office, kind, at, staff, activity, patient_since)
    SELECT id, dossier_id, office, kind, at, staff, activity, patient_since FROM staff_events_v8
    ORDER BY dossier_id, id;
DROP TABLE staff_events_v8;
CREATE INDEX staff_events_at
    ON staff_events(at, office, kind, staff, dossier_id, activity, patient_since);
"#,
            followup_tally_triggers!()
        )
    };
}

/// The migration to version 9 (from version 8): [its changes](v9_changes).
/// Frozen.
pub const V9_CHANGES: &str = v9_changes!();

/// What version 10 adds: the overdue count from day tallies. A slot is
/// overdue on day D when `overdue_from <= D < settled_on`, so the slots
/// overdue at the end of a report's range are those opened on or before
/// it less those settled by then: a sum over `overdue_tallies` (a row per
/// office and day, tens of thousands at most, read in office order: the
/// report groups by office without sorting). The R*Tree answered it
/// before, but keeping it costs page writes at random places that grow
/// with the store (its forced reinserts and node splits rewrite the
/// entries' mapping rows, scattered over its `_rowid` table): at 1M
/// dossiers it was a fifth of the projector's time (BENCHMARKS.md). The
/// R*Tree stays for the office's day list, a stabbing query a tally
/// cannot answer. Filled from the rows here (no projection again). Frozen.
macro_rules! v10_additions {
    () => {
        concat!(
            r#"
CREATE TABLE overdue_tallies (
    day TEXT NOT NULL,
    office TEXT NOT NULL,
    opened INTEGER NOT NULL,
    settled INTEGER NOT NULL,
    PRIMARY KEY (office, day)
) WITHOUT ROWID;
"#,
            overdue_tally_triggers!(),
            fill_overdue_tallies!()
        )
    };
}

/// The migration to version 10 (from version 9): [its additions](v10_additions).
/// Frozen.
pub const V10_ADDITIONS: &str = v10_additions!();

/// What version 11 changes: a dossier's table digests move into its
/// `patients` row (a `digests` column), out of `projection_digests`. The
/// projector reads a dossier's digests for every edit and writes them
/// whenever a table's rows changed, and every edit changes the patient
/// row too (its last contact): two rows keyed alike in two B-trees, so in
/// a large store two pages at a random place for each dossier a day
/// touches where one does (0.79 pages a document of a day's 6.74 at 1M
/// dossiers, BENCHMARKS.md). Every dossier projects exactly one patient
/// row; the digests are copied over as they are (no projection again).
/// The `AFTER UPDATE` triggers on `patients` compare only the columns
/// they count. Frozen.
macro_rules! v11_changes {
    () => {
        r#"
ALTER TABLE patients ADD COLUMN digests BLOB;
UPDATE patients SET digests =
    (SELECT d.digests FROM projection_digests d WHERE d.dossier_id = patients.dossier_id);
DROP TABLE projection_digests;
"#
    };
}

/// The migration to version 11 (from version 10): [its changes](v11_changes).
/// Frozen.
pub const V11_CHANGES: &str = v11_changes!();

/// The projection tables as they are now (version 11): what a fresh store's
/// migrations reach, and what every older store is migrated to (tested on
/// both stores, and on stores made by an earlier release).
pub const SCHEMA: &str = concat!(
    v3_tables!(),
    v4_additions!(),
    v5_additions!(),
    v6_changes!(),
    v7_additions!(),
    v8_changes!(),
    v9_changes!(),
    v10_additions!(),
    v11_changes!()
);

/// The version of [`SCHEMA`].
pub const SCHEMA_VERSION: u32 = 11;

/// Drops the indexes only an office's lists read: the lists by category,
/// typical and problem ([`patients::list_patients`]), the due list by
/// person (`assignee`), and the category index the lists' counts read
/// before version 4's tallies. The server lists no patients, so its store
/// drops them: a new dossier's patient row is written into two indexes at
/// random places fewer (`patients_list`, `patients_category`; the three
/// partial ones hold few rows), the pages the projector's cost grows with
/// at national scale, and ~145 bytes a dossier. A later projection
/// version that changes them must use `IF EXISTS`. Frozen.
pub const DROP_OFFICE_LIST_INDEXES: &str = "
DROP INDEX IF EXISTS patients_category;
DROP INDEX IF EXISTS patients_list;
DROP INDEX IF EXISTS patients_list_typical;
DROP INDEX IF EXISTS patients_list_problem;
DROP INDEX IF EXISTS patients_assignee;
";

/// Drops the R*Tree of spans (version 8) and its triggers: it serves the
/// office's day list, and the server lists no patients (its reports count
/// overdue slots from the tallies of version 10). Keeping it was the
/// largest part of what made the projector slower as the store grew. A
/// later projection version that changes it must use `IF EXISTS`. Frozen.
pub const DROP_SLOT_SPANS: &str = "
DROP TRIGGER IF EXISTS slot_spans_insert;
DROP TRIGGER IF EXISTS slot_spans_update;
DROP TRIGGER IF EXISTS slot_spans_delete;
DROP TABLE IF EXISTS slot_spans;
";

/// Every projection table (the R*Tree follows `slots` by triggers).
pub const TABLES: [&str; 14] = [
    "staff",
    "patients",
    "patient_phones",
    "calls",
    "visits",
    "purchases",
    "followups",
    "contacts",
    "problems",
    "slots",
    "deliveries",
    "nonpatient_calls",
    "staff_events",
    "activities",
];

/// Day number as the `slot_spans` R*Tree counts: days since 2000-01-01.
pub fn span_day(d: NaiveDate) -> i64 {
    (d - NaiveDate::from_ymd_opt(2000, 1, 1).expect("epoch")).num_days()
}

/// The last day with a consultation call in `office` (every office when
/// `None`): where a dashboard's default range ends.
pub fn last_call_day(conn: &Connection, office: Option<&str>) -> Result<Option<NaiveDate>> {
    let at: Option<String> = match office {
        Some(o) => conn.query_row("SELECT max(at) FROM calls WHERE office = ?1", [o], |r| {
            r.get(0)
        })?,
        None => conn.query_row("SELECT max(at) FROM calls", [], |r| r.get(0))?,
    };
    Ok(at.and_then(|t| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok()))
}

/// The record of indexes [`set_indexes_aside`] dropped, for
/// [`restore_indexes`] to create again (after a crash too: the store
/// restores them when it opens). Bookkeeping of the store that bulk-loads
/// (the replica), added by a migration of its own, not part of the
/// projection's versioned schema. Frozen.
pub const INDEXES_ASIDE: &str = "
CREATE TABLE projection_indexes_aside (
    name TEXT PRIMARY KEY,
    sql TEXT NOT NULL
) WITHOUT ROWID;
";

/// The column by which the projection's own writes find a table's rows
/// (`project_dossier` reads and deletes a dossier's rows, `project_roster`
/// an office's, `project_nonpatient` a log's): indexes led by it stay
/// through a bulk load.
fn write_lookup_column(table: &str) -> &'static str {
    match table {
        "staff" | "activities" => "office",
        "nonpatient_calls" => "log_id",
        _ => "dossier_id",
    }
}

/// Drops the projection's indexes that only reads use (the reports', the
/// lists', lookups by name or phone) and the triggers that keep the tallies
/// and the R*Tree of spans, and records them in `projection_indexes_aside`;
/// returns how many. For a bulk load into empty tables (a new device's
/// first sync of a whole province, or of the nation at headquarters):
/// filling an index row by row writes it at random places, a page read and
/// written again for nearly every row once the index outgrows the page
/// cache, while [`restore_indexes`] builds each once, by sorting. A
/// trigger makes each row's insert run more statements and keep a
/// statement journal, and [`restore_indexes`] fills the tables they keep
/// once, from the rows (a headquarters device's first sync of 100k
/// dossiers took about a third less time so). Meanwhile queries by
/// the rows stay correct, only slower, while the tallies and spans lag
/// (a replica half-way through its first pull has no figures to give
/// anyway). Indexes the projection's own writes read, and the keys, stay.
/// Run it in the caller's write transaction, and [`restore_indexes`]
/// afterwards.
pub fn set_indexes_aside(conn: &Connection) -> Result<usize> {
    let upkeep: Vec<(String, String, String, String)> = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master
             WHERE type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut aside = 0;
    for (kind, name, table, sql) in upkeep {
        if !TABLES.contains(&table.as_str()) {
            continue;
        }
        if kind == "index" {
            let first: Option<String> = conn
                .query_row(
                    "SELECT name FROM pragma_index_info(?1) WHERE seqno = 0",
                    [&name],
                    |r| r.get(0),
                )
                .optional()?;
            if first.as_deref() == Some(write_lookup_column(&table)) {
                continue;
            }
        }
        conn.execute(
            "INSERT INTO projection_indexes_aside (name, sql) VALUES (?1, ?2)",
            params![name, sql],
        )?;
        let kind = if kind == "index" { "INDEX" } else { "TRIGGER" };
        conn.execute_batch(&format!("DROP {kind} \"{}\"", name.replace('"', "\"\"")))?;
        aside += 1;
    }
    Ok(aside)
}

/// Creates again every index and trigger [`set_indexes_aside`] recorded
/// (one missing from the schema; an index is built from the table's rows
/// by sorting) and forgets them; returns how many were created. When
/// triggers come back, the tables they keep are filled again from the
/// rows ([`TRIGGER_KEPT`]): what was written while they were away is
/// counted once, whatever it was. Nothing to do is one read of an empty
/// table. Run it in the caller's write transaction.
pub fn restore_indexes(conn: &Connection) -> Result<usize> {
    restore(conn, None::<fn() -> Option<Connection>>)
}

/// [`restore_indexes`], with the tallies counted on a second core: a
/// thread opens another connection to the same database (`open_reader`)
/// and counts them in one read transaction while this connection builds
/// the indexes and the R*Tree, then this one writes the rows it counted.
/// The counts are a few thousand rows, each sorted out of millions of
/// slots or follow-ups: at 1M dossiers about 70 s of the 115 s this took
/// on one core after a first sync (the R*Tree 34 s, the indexes 11 s).
/// Whatever the reader has not taken when this connection is done, it
/// counts itself; whatever the reader could not count (`open_reader` gave
/// none, a query failed) too, so the rows are those of
/// [`restore_indexes`] either way.
///
/// The caller holds the write lock in a transaction that has changed no
/// row yet (`BEGIN IMMEDIATE`, in WAL mode): the reader's snapshot, taken
/// after, then holds exactly the rows this connection sees, and nothing
/// can commit until this one does.
pub fn restore_indexes_beside<F>(conn: &Connection, open_reader: F) -> Result<usize>
where
    F: FnOnce() -> Option<Connection> + Send,
{
    restore(conn, Some(open_reader))
}

fn restore<F>(conn: &Connection, open_reader: Option<F>) -> Result<usize>
where
    F: FnOnce() -> Option<Connection> + Send,
{
    let aside: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM projection_indexes_aside ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut missing = Vec::new();
    for (name, sql) in &aside {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if !exists {
            missing.push(sql);
        }
    }
    // SQLite keeps a schema entry's text with its first keywords in upper
    // case and single spaces.
    let triggers = missing.iter().any(|sql| sql.starts_with("CREATE TRIGGER "));
    // The next of TRIGGER_KEPT to fill: the reader and this connection
    // take from it in turn.
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let counting = match open_reader {
            Some(open) if triggers => Some(scope.spawn(|| count_beside(open, &next))),
            _ => None,
        };
        let built = build_and_fill(conn, &missing, triggers, &next, counting);
        if built.is_err() {
            // Nothing more for the reader to take: the scope waits for it.
            next.store(TRIGGER_KEPT.len(), Ordering::Relaxed);
        }
        built
    })?;
    conn.execute("DELETE FROM projection_indexes_aside", [])?;
    Ok(missing.len())
}

/// The writer's part of [`restore`]: creates what is `missing`, then
/// (`triggers` back) fills the R*Tree, the tallies it takes from `next`,
/// and writes those the reader `counting` counted.
fn build_and_fill(
    conn: &Connection,
    missing: &[&String],
    triggers: bool,
    next: &AtomicUsize,
    counting: Option<std::thread::ScopedJoinHandle<'_, Counted>>,
) -> Result<()> {
    for sql in missing {
        conn.execute_batch(sql)?;
    }
    if !triggers {
        return Ok(());
    }
    let mut filled = [false; TRIGGER_KEPT.len()];
    for (i, kept) in TRIGGER_KEPT.iter().enumerate() {
        if kept.rows.is_none() {
            refill(conn, kept)?;
            filled[i] = true;
        }
    }
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(kept) = TRIGGER_KEPT.get(i) else {
            break;
        };
        if !filled[i] {
            refill(conn, kept)?;
            filled[i] = true;
        }
    }
    // A reader that panicked counted nothing.
    let counted = counting.map_or_else(Vec::new, |h| h.join().unwrap_or_default());
    for (i, rows) in counted {
        let kept = &TRIGGER_KEPT[i];
        conn.execute(&format!("DELETE FROM {}", kept.table), [])?;
        if let Some(first) = rows.first() {
            let marks = vec!["?"; first.len()].join(", ");
            let mut insert =
                conn.prepare(&format!("INSERT INTO {} VALUES ({marks})", kept.table))?;
            for row in &rows {
                insert.execute(rusqlite::params_from_iter(row))?;
            }
        }
        filled[i] = true;
    }
    // What the reader took but could not count.
    for (kept, done) in TRIGGER_KEPT.iter().zip(filled) {
        if !done {
            refill(conn, kept)?;
        }
    }
    Ok(())
}

/// Tallies a reader counted: each one's rows, by its place in
/// [`TRIGGER_KEPT`].
type Counted = Vec<(usize, Vec<Vec<Value>>)>;

/// Empties a table the triggers keep and fills it from the rows it follows.
fn refill(conn: &Connection, kept: &Kept) -> Result<()> {
    conn.execute(&format!("DELETE FROM {}", kept.table), [])?;
    conn.execute_batch(kept.fill)
}

/// The reader of [`restore_indexes_beside`]: counts the tallies it takes
/// from `next` in one read transaction, until none is left or one fails;
/// returns their rows by their place in [`TRIGGER_KEPT`].
fn count_beside<F>(open_reader: F, next: &AtomicUsize) -> Counted
where
    F: FnOnce() -> Option<Connection>,
{
    let mut counted = Vec::new();
    let Some(reader) = open_reader() else {
        return counted;
    };
    // One snapshot for every count.
    if reader.execute_batch("BEGIN").is_err() {
        return counted;
    }
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(kept) = TRIGGER_KEPT.get(i) else {
            break;
        };
        let Some(query) = kept.rows else {
            continue;
        };
        let rows = reader.prepare(query).and_then(|mut stmt| {
            let n = stmt.column_count();
            stmt.query_map([], |r| (0..n).map(|c| r.get::<_, Value>(c)).collect())?
                .collect::<rusqlite::Result<Vec<Vec<Value>>>>()
        });
        match rows {
            Ok(rows) => counted.push((i, rows)),
            Err(_) => break,
        }
    }
    counted
}

/// Deletes every projection row derived from a document (before a
/// rebuild). The stand-ins of erased dossiers (`erased-…`, see
/// `keqing_shared::lifecycle`) stay: no document can derive them again,
/// and they keep the figures of days reported before the erasure. (The
/// tallies follow by their triggers.)
pub fn clear(conn: &Connection) -> Result<()> {
    let stand_in = format!("'{}%'", keqing_shared::lifecycle::ERASED_PREFIX);
    for table in TABLES {
        if rows::DOSSIER_TABLES.iter().any(|t| t.name == table) {
            conn.execute(
                &format!("DELETE FROM {table} WHERE dossier_id NOT LIKE {stand_in}"),
                [],
            )?;
        } else {
            conn.execute(&format!("DELETE FROM {table}"), [])?;
        }
    }
    Ok(())
}

/// Every projection row in a canonical text form, to compare two stores'
/// projections (rebuild == incremental).
pub fn dump(conn: &Connection) -> Result<String> {
    let mut out = String::new();
    for table in rows::dumped_tables() {
        let n = table.columns.len();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM {}",
            table.columns.join(", "),
            table.name
        ))?;
        let stored: Vec<Row> = stmt
            .query_map([], |r| (0..n).map(|i| Ok(cell_of(r.get_ref(i)?))).collect())?
            .collect::<rusqlite::Result<_>>()?;
        for line in rows::dump_lines(table, stored) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Deletes every projection row of one dossier (a device dropping it).
pub fn remove_dossier(conn: &Connection, dossier_id: &str) -> Result<()> {
    for table in rows::DOSSIER_TABLES {
        conn.prepare_cached(&format!("DELETE FROM {} WHERE dossier_id = ?1", table.name))?
            .execute([dossier_id])?;
    }
    Ok(())
}

/// Makes the staff and activity rows of `office` exactly its roster's.
pub fn project_roster(
    conn: &Connection,
    office: &str,
    staff: &[Staff],
    activities: &[keqing_shared::activity::Activity],
) -> Result<()> {
    conn.execute("DELETE FROM staff WHERE office = ?1", [office])?;
    upsert_rows(conn, &rows::STAFF, &rows::staff_rows(office, staff))?;
    conn.execute("DELETE FROM activities WHERE office = ?1", [office])?;
    upsert_rows(
        conn,
        &rows::ACTIVITIES,
        &rows::activity_rows(office, activities),
    )
}

/// Makes the non-patient call rows of log `log_id` (of `office`) exactly
/// `calls`.
pub fn project_nonpatient(
    conn: &Connection,
    log_id: &str,
    office: &str,
    calls: &[keqing_shared::records::NonPatientCall],
) -> Result<()> {
    conn.execute("DELETE FROM nonpatient_calls WHERE log_id = ?1", [log_id])?;
    upsert_rows(
        conn,
        &rows::NONPATIENT_CALLS,
        &rows::nonpatient_rows(log_id, office, calls),
    )
}

fn upsert_rows(conn: &Connection, table: &Table, rows: &[Row]) -> Result<()> {
    let mut upsert = conn.prepare_cached(&table_sql(table).upsert)?;
    for row in rows {
        upsert.execute(rusqlite::params_from_iter(row.iter()))?;
    }
    Ok(())
}

/// Reads a slot from `r` starting at column `i` (cadence, reason, day,
/// anchor, due_from, deadline, satisfied_at, closed_at).
pub fn slot_from_row(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Slot> {
    let cadence: String = r.get(i)?;
    Ok(Slot {
        cadence: Cadence::parse(&cadence).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Text,
                format!("cadence {cadence}").into(),
            )
        })?,
        reason: r.get(i + 1)?,
        day: r.get(i + 2)?,
        anchor: stored_required(r, i + 3, read_stored_datetime)?,
        due_from: stored_required(r, i + 4, read_stored_date)?,
        deadline: stored_required(r, i + 5, read_stored_date)?,
        satisfied_at: stored(r, i + 6, read_stored_datetime)?,
        closed_at: stored(r, i + 7, read_stored_datetime)?,
    })
}

/// Column `i` as text, `None` for NULL.
fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    use rusqlite::types::{FromSqlError, Type, ValueRef};
    match r.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(Some)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            i,
            other.data_type(),
            Box::new(FromSqlError::InvalidType),
        )),
    }
}

/// A stored date or time in column `i`, NULL allowed, read by `read` (the
/// fast readers of `keqing_shared::when`).
fn stored<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    read: fn(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    let Some(text) = text_at(r, i)? else {
        return Ok(None);
    };
    read(text).map(Some).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not a stored date: {text}").into(),
        )
    })
}

/// The same, NULL refused.
fn stored_required<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    read: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    stored(r, i, read)?.ok_or(rusqlite::Error::InvalidColumnType(
        i,
        "NULL".into(),
        rusqlite::types::Type::Null,
    ))
}

fn midnight(d: NaiveDate) -> String {
    fmt_datetime(d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// The report's range reads of rows (each answered from one covering
/// index: tested).
pub mod report_sql {
    pub const CALLS: &str = "SELECT office, dossier_id, at, staff, source, disease FROM calls
     WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR office = ?3)";
    pub const VISITS: &str = "SELECT office, dossier_id, at, staff, purchased, reason FROM visits
     WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR office = ?3)";
    pub const PURCHASES: &str =
        "SELECT office, dossier_id, at, staff, amount_fen, nth, prev_runout FROM purchases
     WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR office = ?3)";
    /// [`keqing_shared::report::MarkCounts::count_typical`]: flagged by
    /// the end (?2), of them from the start (?1).
    pub const TYPICAL_COUNTS: &str =
        "SELECT office, count(*), count(*) FILTER (WHERE typical_at >= ?1) FROM patients
     WHERE typical = 1 AND typical_at < ?2 AND (?3 IS NULL OR office = ?3)
     GROUP BY office";
    /// [`keqing_shared::report::MarkCounts::count_problem`] of the problems
    /// the range meets: opened from the start (?1), open at the end (?2),
    /// resolved before it.
    pub const PROBLEM_COUNTS: &str = "SELECT office, count(*) FILTER (WHERE at >= ?1),
            count(*) FILTER (WHERE resolved_at IS NULL OR resolved_at >= ?2),
            count(*) FILTER (WHERE resolved_at < ?2)
     FROM problems
     WHERE at < ?2 AND (resolved_at IS NULL OR resolved_at >= ?1)
       AND (?3 IS NULL OR office = ?3)
     GROUP BY office";
    pub const NONPATIENT: &str = "SELECT office, at, staff, kind FROM nonpatient_calls
     WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR office = ?3)";
    pub const STAFF_EVENTS: &str =
        "SELECT office, dossier_id, at, staff, kind, activity, patient_since FROM staff_events
     WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR office = ?3)";
    pub const ROLES: &str =
        "SELECT office, name, role FROM staff WHERE (?1 IS NULL OR office = ?1)";
    pub const ACTIVITIES: &str =
        "SELECT id, office, name, kind, starts, ends, source FROM activities
     WHERE (?1 IS NULL OR office = ?1)";
}

/// A staff event row (columns of [`report_sql::STAFF_EVENTS`]), or `None`
/// for a kind this build does not know.
pub fn staff_event_from(
    office: String,
    dossier: String,
    at: chrono::NaiveDateTime,
    staff: String,
    kind: &str,
    activity: Option<String>,
    patient_since: Option<chrono::NaiveDateTime>,
) -> Option<keqing_shared::report::StaffEvent> {
    Some(keqing_shared::report::StaffEvent {
        office,
        dossier,
        at,
        staff,
        kind: keqing_shared::report::StaffEventKind::parse(kind)?,
        activity,
        patient_since,
    })
}

/// A staff member's role as reports show it, from the stored code.
pub fn role_from(office: String, staff: String, role: &str) -> keqing_shared::report::StaffRole {
    keqing_shared::report::StaffRole {
        office,
        staff,
        role: keqing_shared::staff::Role::parse(role)
            .map_or_else(|_| role.to_string(), |r| r.chinese().to_string()),
    }
}

/// An office's own activity from its row (columns of
/// [`report_sql::ACTIVITIES`]); `None` for one that no longer reads as
/// sound.
pub fn activity_from(
    id: String,
    office: String,
    name: String,
    kind: &str,
    (starts, ends): (&str, &str),
    source: Option<String>,
) -> Option<keqing_shared::activity::Activity> {
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    Some(keqing_shared::activity::Activity {
        id,
        name,
        kind: keqing_shared::activity::ActivityKind::parse(kind)?,
        starts: date(starts)?,
        ends: date(ends)?,
        offices: Vec::new(),
        source,
        by_office: Some(office),
    })
}

/// The rows [`keqing_shared::report::build`] needs for the days
/// `from..=to`, in one office (`Some(code)`) or every office (`None`).
/// Each query reads a covering index on time (the records), or a tally
/// (follow-ups and due slots by day, categories), so the cost follows the
/// rows in the range, not the size of the store.
///
/// The queries read one snapshot (a read transaction, unless the caller
/// is inside one already): a projector committing a batch between two of
/// them must not leave the report counting its calls but not its visits.
pub fn report_rows(
    conn: &Connection,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<ReportRows> {
    if !conn.is_autocommit() {
        return report_rows_in_snapshot(conn, office, from, to);
    }
    // Deferred: the snapshot is taken by the first query, and a read
    // transaction never waits for a writer (WAL).
    let tx = conn.unchecked_transaction()?;
    let rows = report_rows_in_snapshot(&tx, office, from, to)?;
    tx.commit()?;
    Ok(rows)
}

fn report_rows_in_snapshot(
    conn: &Connection,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<ReportRows> {
    let start = midnight(from);
    let end = midnight(to + chrono::Duration::days(1));
    let mut rows = ReportRows::default();
    let mut stmt = conn.prepare_cached(report_sql::CALLS)?;
    rows.calls = stmt
        .query_map(params![start, end, office], |r| {
            Ok(CallFact {
                office: r.get(0)?,
                dossier: r.get(1)?,
                at: stored_required(r, 2, read_stored_datetime)?,
                staff: r.get(3)?,
                source: r.get(4)?,
                disease: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(report_sql::VISITS)?;
    rows.visits = stmt
        .query_map(params![start, end, office], |r| {
            Ok(VisitFact {
                office: r.get(0)?,
                dossier: r.get(1)?,
                at: stored_required(r, 2, read_stored_datetime)?,
                staff: r.get(3)?,
                purchased: r.get(4)?,
                reason: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(report_sql::PURCHASES)?;
    rows.purchases = stmt
        .query_map(params![start, end, office], |r| {
            Ok(PurchaseFact {
                office: r.get(0)?,
                dossier: r.get(1)?,
                at: stored_required(r, 2, read_stored_datetime)?,
                staff: r.get(3)?,
                amount_fen: r.get(4)?,
                order: PurchaseOrder {
                    nth: r.get(5)?,
                    prev_runout: stored(r, 6, read_stored_date)?,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Read from the day tallies: the report only counts follow-ups, by
    // office, staff and day.
    let mut stmt = conn.prepare_cached(
        "SELECT office, staff, day, done, on_time FROM followup_tallies
         WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR office = ?3)",
    )?;
    rows.followups = stmt
        .query_map(params![fmt_date(from), fmt_date(to), office], |r| {
            Ok(FollowUpTally {
                office: r.get(0)?,
                staff: r.get(1)?,
                day: stored_required(r, 2, read_stored_date)?,
                done: count(r, 3)?,
                on_time: count(r, 4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.slot_counts = slot_counts(conn, office, from, to)?;
    rows.marks = mark_counts(conn, office, from, to)?;
    let mut stmt = conn.prepare_cached(report_sql::NONPATIENT)?;
    rows.nonpatient = stmt
        .query_map(params![start, end, office], |r| {
            Ok(NonPatientFact {
                office: r.get(0)?,
                at: stored_required(r, 1, read_stored_datetime)?,
                staff: r.get(2)?,
                kind: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.categories = category_counts(conn, office, to)?;
    let mut stmt = conn.prepare_cached(report_sql::STAFF_EVENTS)?;
    rows.events = stmt
        .query_map(params![start, end, office], |r| {
            Ok(staff_event_from(
                r.get(0)?,
                r.get(1)?,
                stored_required(r, 2, read_stored_datetime)?,
                r.get(3)?,
                &r.get::<_, String>(4)?,
                r.get(5)?,
                stored(r, 6, read_stored_datetime)?,
            ))
        })?
        .filter_map(Result::transpose)
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(report_sql::ROLES)?;
    rows.roles = stmt
        .query_map(params![office], |r| {
            Ok(role_from(r.get(0)?, r.get(1)?, &r.get::<_, String>(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(report_sql::ACTIVITIES)?;
    rows.activities = stmt
        .query_map(params![office], |r| {
            Ok(activity_from(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                &r.get::<_, String>(3)?,
                (&r.get::<_, String>(4)?, &r.get::<_, String>(5)?),
                r.get(6)?,
            ))
        })?
        .filter_map(Result::transpose)
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// How many live dossiers stand in each category on day `day` (and carry
/// each flag), per office: one pass over the category tallies.
pub fn category_counts(
    conn: &Connection,
    office: Option<&str>,
    day: NaiveDate,
) -> Result<Vec<CategoryCounts>> {
    // Grouped in the tallies' key order (no sort); the buyers whose lapse
    // date has come are counted apart and moved to 流失.
    let mut stmt = conn.prepare_cached(
        "SELECT office, category, sum(patients),
                sum(CASE WHEN category <> 'stopped' AND lapses_on <> '' AND lapses_on <= ?1
                         THEN patients ELSE 0 END),
                sum(typical), sum(problem)
         FROM category_tallies
         WHERE (?2 IS NULL OR office = ?2)
         GROUP BY office, category",
    )?;
    let count = |r: &rusqlite::Row<'_>, i| {
        r.get::<_, Option<i64>>(i)
            .map(|n| n.unwrap_or(0).max(0) as u64)
    };
    let rows = stmt
        .query_map(params![fmt_date(day), office], |r| {
            Ok(CategoryTally {
                office: r.get(0)?,
                category: r.get(1)?,
                count: count(r, 2)?,
                lapsed: count(r, 3)?,
                typical: count(r, 4)?,
                problem: count(r, 5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(fold_category_counts(rows))
}

/// One office's dossiers of one stored category (see [`category_counts`]):
/// how many, how many of them have lapsed by the day asked about, carry
/// the typical flag, have open problems.
#[derive(Debug, Clone)]
pub struct CategoryTally {
    pub office: String,
    pub category: String,
    pub count: u64,
    pub lapsed: u64,
    pub typical: u64,
    pub problem: u64,
}

/// The categories of each office from the tallies of any store: the
/// buyers whose lapse date has come are counted as 流失.
pub fn fold_category_counts(
    tallies: impl IntoIterator<Item = CategoryTally>,
) -> Vec<CategoryCounts> {
    let position = |c: Category| Category::ALL.iter().position(|x| *x == c);
    let mut by_office: std::collections::BTreeMap<String, CategoryCounts> = Default::default();
    for t in tallies {
        let e = by_office
            .entry(t.office.clone())
            .or_insert_with(|| CategoryCounts {
                office: t.office,
                ..Default::default()
            });
        if let Some(i) = Category::parse(&t.category).and_then(position) {
            let lapsed = t.lapsed.min(t.count);
            e.categories[i] += t.count - lapsed;
            if let Some(l) = position(Category::Lapsed) {
                e.categories[l] += lapsed;
            }
        }
        e.typical += t.typical;
        e.problem += t.problem;
    }
    by_office.into_values().collect()
}

/// The slot figures of each office for the days `from..=to`, as
/// [`SlotCounts`] defines them: due and on time from the flags fixed at
/// projection, overdue at the end of `to` from the R*Tree of spans alone.
pub fn slot_counts(
    conn: &Connection,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<SlotCounts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT office, sum(due), sum(due_on_time), sum(not_visited_due),
                sum(not_visited_on_time)
         FROM slot_tallies
         WHERE deadline >= ?1 AND deadline <= ?2 AND (?3 IS NULL OR office = ?3)
         GROUP BY office",
    )?;
    let due = stmt.query_map(params![fmt_date(from), fmt_date(to), office], |r| {
        Ok(SlotCounts {
            office: r.get(0)?,
            due: count(r, 1)?,
            due_on_time: count(r, 2)?,
            not_visited_due: count(r, 3)?,
            not_visited_on_time: count(r, 4)?,
            overdue: 0,
        })
    })?;
    let due: Vec<SlotCounts> = due.collect::<rusqlite::Result<_>>()?;
    // Overdue at the end of `to`: opened on or before it, not settled by
    // then (version 10's tallies; an office with none is left out).
    let overdue: Vec<(String, u64)> = conn
        .prepare_cached(
            "SELECT office, sum(opened) - sum(settled) FROM overdue_tallies
             WHERE day <= ?1 AND (?2 IS NULL OR office = ?2)
             GROUP BY office HAVING sum(opened) > sum(settled)",
        )?
        .query_map(params![fmt_date(to), office], |r| {
            Ok((r.get(0)?, count(r, 1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(fold_slot_counts(due, overdue))
}

/// Column `i` of a row as a count: counts are never negative, so SQLite's
/// i64 becomes u64 losslessly.
fn count(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    r.get::<_, i64>(i).map(|n| n.max(0) as u64)
}

/// The typical-case and problem figures of each office for the days
/// `from..=to`, as [`MarkCounts`] defines them.
pub fn mark_counts(
    conn: &Connection,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<MarkCounts>> {
    let (start, end) = (midnight(from), midnight(to + chrono::Duration::days(1)));
    let typical = conn
        .prepare_cached(report_sql::TYPICAL_COUNTS)?
        .query_map(params![start, end, office], |r| {
            Ok(MarkCounts {
                office: r.get(0)?,
                typical: count(r, 1)?,
                typical_new: count(r, 2)?,
                ..Default::default()
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let problems = conn
        .prepare_cached(report_sql::PROBLEM_COUNTS)?
        .query_map(params![start, end, office], |r| {
            Ok(MarkCounts {
                office: r.get(0)?,
                problems_opened: count(r, 1)?,
                problems_open: count(r, 2)?,
                problems_resolved: count(r, 3)?,
                ..Default::default()
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(fold_mark_counts(typical, problems))
}

/// Each office's mark figures from any store's two reads (the typical
/// counts, the problem counts), one line an office.
pub fn fold_mark_counts(typical: Vec<MarkCounts>, problems: Vec<MarkCounts>) -> Vec<MarkCounts> {
    let mut by_office: std::collections::BTreeMap<String, MarkCounts> = Default::default();
    for m in typical.into_iter().chain(problems) {
        let e = by_office
            .entry(m.office.clone())
            .or_insert_with(|| MarkCounts {
                office: m.office.clone(),
                ..Default::default()
            });
        e.add(&m);
    }
    by_office.into_values().collect()
}

/// Each office's slot figures from any store's two reads: the due counts
/// of the range, and the overdue count at its end (office, count).
pub fn fold_slot_counts(due: Vec<SlotCounts>, overdue: Vec<(String, u64)>) -> Vec<SlotCounts> {
    let mut by_office: std::collections::BTreeMap<String, SlotCounts> =
        due.into_iter().map(|c| (c.office.clone(), c)).collect();
    for (code, n) in overdue {
        by_office
            .entry(code.clone())
            .or_insert_with(|| SlotCounts {
                office: code,
                ..Default::default()
            })
            .overdue = n;
    }
    by_office.into_values().collect()
}

/// Brings every projection row of one dossier in line with its view.
///
/// Rows are written only where they differ (a stored row only in the
/// columns that changed) and stale rows deleted, so an edit rewrites only
/// the pages it really changes (a delete-and-reinsert of all a dossier's
/// rows would dirty every index page they touch). The result is the same
/// rows as a rebuild.
pub fn project_dossier(conn: &Connection, v: &DossierView, slots: &[Slot]) -> Result<()> {
    write_dossier(conn, rows::DossierRows::of(v, slots))
}

/// [`project_dossier`] with the rows derived before (on another thread).
pub fn write_dossier(conn: &Connection, d: rows::DossierRows) -> Result<()> {
    sync_tables(conn, &d.id, d.tables, &d.digests)
}

/// [`project_dossier`] for a dossier that has no projection rows yet (its
/// document is new here: rows exist only for stored documents): inserts
/// without first reading what is stored, the bulk of a fresh device's
/// first pull. Rows keyed by a record another dossier holds (copied there
/// by a merge) are taken over, as [`project_dossier`] would.
pub fn project_new_dossier(conn: &Connection, v: &DossierView, slots: &[Slot]) -> Result<()> {
    write_new_dossier(conn, &rows::DossierRows::of(v, slots))
}

/// [`project_new_dossier`] with the rows derived before (on another
/// thread).
pub fn write_new_dossier(conn: &Connection, d: &rows::DossierRows) -> Result<()> {
    for (table, rows) in &d.tables {
        upsert_rows(conn, table, rows)?;
    }
    store_digests(conn, &d.id, &rows::Digests::against(&d.digests, None).bytes)
}

/// Records a dossier's table digests in its patient row (written before:
/// every dossier has one, the first table of its rows).
fn store_digests(conn: &Connection, dossier_id: &str, digests: &[u8]) -> Result<()> {
    conn.prepare_cached("UPDATE patients SET digests = ?2 WHERE dossier_id = ?1")?
        .execute(params![dossier_id, digests])?;
    Ok(())
}

/// Brings each table's rows of the dossier to `rows`, skipping the tables
/// whose digest is the one stored (the `digests` of its patient row).
fn sync_tables(
    conn: &Connection,
    dossier_id: &str,
    tables: Vec<(&Table, Vec<Row>)>,
    digests: &[u64],
) -> Result<()> {
    // No patient row yet (a new dossier), or one without digests (its
    // digests were cleared, or never stored): every table is compared.
    let stored: Option<Vec<u8>> = conn
        .prepare_cached("SELECT digests FROM patients WHERE dossier_id = ?1")?
        .query_row([dossier_id], |r| r.get::<_, Option<Vec<u8>>>(0))
        .optional()?
        .flatten();
    let digests = rows::Digests::against(digests, stored.as_deref());
    for (k, (table, rows)) in tables.into_iter().enumerate() {
        if digests.changed[k] {
            sync_rows(conn, table, dossier_id, rows)?;
        }
    }
    if digests.replace_stored {
        store_digests(conn, dossier_id, &digests.bytes)?;
    }
    Ok(())
}

/// Each table's statements in SQLite, written once (and prepared once,
/// cached by the connection).
static TABLE_SQL: [OnceLock<TableSql>; rows::TABLE_COUNT] =
    [const { OnceLock::new() }; rows::TABLE_COUNT];

fn table_sql(table: &Table) -> &'static TableSql {
    TABLE_SQL[table.index].get_or_init(|| TableSql::new(table, |i| format!("?{i}")))
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(*i),
            Cell::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// A stored value as a [`Cell`] (what [`dump`] prints, the same on every
/// store); a REAL or BLOB, which no projection column holds, as its debug text.
fn cell_of(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Integer(i),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        other => Cell::Text(format!("{other:?}")),
    }
}

/// Makes the rows of `dossier_id` in `table` exactly `rows`, writing only
/// what differs: the dossier's rows are read in one range scan and compared
/// here, in place (a long history has ~150 rows to compare on every edit),
/// so an edit that adds one call writes one call row, not all of them.
fn sync_rows(conn: &Connection, table: &Table, dossier_id: &str, rows: Vec<Row>) -> Result<()> {
    use rusqlite::types::Value;
    let sql = table_sql(table);
    // For each wanted row, the positions of its columns that differ from
    // the stored row's (None: not stored), and the keys of stored rows no
    // longer wanted.
    let mut differing: Vec<Option<Vec<usize>>> = vec![None; rows.len()];
    let mut unwanted: Vec<Vec<Value>> = Vec::new();
    let mut select = conn.prepare_cached(&sql.select)?;
    let mut stored = select.query([dossier_id])?;
    while let Some(r) = stored.next()? {
        let mut wanted = None;
        'rows: for (k, row) in rows.iter().enumerate() {
            for &i in &sql.key_positions {
                if !same_value(&row[i], r.get_ref(i)?) {
                    continue 'rows;
                }
            }
            wanted = Some(k);
            break;
        }
        match wanted {
            Some(k) => {
                let mut changed = Vec::new();
                for (i, v) in rows[k].iter().enumerate() {
                    if !same_value(v, r.get_ref(i)?) {
                        changed.push(i);
                    }
                }
                differing[k] = Some(changed);
            }
            None => unwanted.push(
                sql.key_positions
                    .iter()
                    .map(|&i| r.get(i))
                    .collect::<rusqlite::Result<_>>()?,
            ),
        }
    }
    // The read is finished (and its statement reset) before any write.
    drop(stored);
    drop(select);
    let mut upsert = conn.prepare_cached(&sql.upsert)?;
    for (row, changed) in rows.iter().zip(&differing) {
        match changed {
            None => {
                upsert.execute(rusqlite::params_from_iter(row.iter()))?;
            }
            Some(changed) if changed.is_empty() => {}
            // Only what changed, so the indexes over the rest are left
            // alone (see `TableSql::update`).
            Some(changed) => {
                let values = changed.iter().chain(&sql.key_positions).map(|&i| &row[i]);
                conn.prepare_cached(&sql.update(changed, |i| format!("?{i}")))?
                    .execute(rusqlite::params_from_iter(values))?;
            }
        }
    }
    let mut delete = conn.prepare_cached(&sql.delete)?;
    for key in &unwanted {
        delete.execute(rusqlite::params_from_iter(key.iter()))?;
    }
    Ok(())
}

/// Whether a value to store equals one stored, without copying it out.
fn same_value(v: &Cell, stored: rusqlite::types::ValueRef<'_>) -> bool {
    use rusqlite::types::ValueRef;
    match (v, stored) {
        (Cell::Null, ValueRef::Null) => true,
        (Cell::Integer(a), ValueRef::Integer(b)) => *a == b,
        (Cell::Text(a), ValueRef::Text(b)) => a.as_bytes() == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
