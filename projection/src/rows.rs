//! The projection's rows, derived from a dossier's view by pure code:
//! backend-neutral values, which each store's writer puts in its own
//! tables (SQLite: this crate's `lib.rs`; PostgreSQL: the server's store).
//! One derivation for every store, so a report reads the same rows
//! whichever holds them.

use chrono::NaiveDateTime;
use keqing_shared::dossier::DossierView;
use keqing_shared::followup::Slot;
use keqing_shared::records::NotBoughtReason;
use keqing_shared::records::Record;
use keqing_shared::report::{counts_as_due, followups_on_time, purchase_orders};
use keqing_shared::staff::Staff;
use keqing_shared::when::{fmt_date, fmt_datetime};

/// One value of a projection row. Dates and times are text (ISO 8601,
/// China Standard Time: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS`), which sorts
/// as time does; flags are 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cell {
    Null,
    Integer(i64),
    Text(String),
}

/// One row, in its table's column order.
pub type Row = Vec<Cell>;

/// A projection table: its columns and its key. `index` numbers the
/// tables, for a writer's per-table statement cache.
#[derive(Debug)]
pub struct Table {
    pub index: usize,
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub key: &'static [&'static str],
}

impl Table {
    /// Positions of the key columns in `columns`.
    pub fn key_positions(&self) -> Vec<usize> {
        self.key
            .iter()
            .map(|k| {
                self.columns
                    .iter()
                    .position(|c| c == k)
                    .expect("a key is one of the columns")
            })
            .collect()
    }

    /// The columns outside the key.
    pub fn non_key_columns(&self) -> Vec<&'static str> {
        self.columns
            .iter()
            .copied()
            .filter(|c| !self.key.contains(c))
            .collect()
    }
}

/// The tables of per-dossier rows, in the order [`dossier_rows`] gives
/// them (and a dossier's digests are stored).
pub static DOSSIER_TABLES: [&Table; 11] = [
    &PATIENTS,
    &PATIENT_PHONES,
    &CALLS,
    &VISITS,
    &PURCHASES,
    &FOLLOWUPS,
    &CONTACTS,
    &PROBLEMS,
    &DELIVERIES,
    &SLOTS,
    // Last, so the digests of dossiers projected before version 7 (ten
    // of them) still match the first ten tables.
    &STAFF_EVENTS,
];

/// Every projection table, in the order [`crate::dump`] prints them.
pub static ALL_TABLES: [&Table; TABLE_COUNT] = [
    &STAFF,
    &PATIENTS,
    &PATIENT_PHONES,
    &CALLS,
    &VISITS,
    &PURCHASES,
    &FOLLOWUPS,
    &CONTACTS,
    &PROBLEMS,
    &SLOTS,
    &DELIVERIES,
    &NONPATIENT_CALLS,
    &STAFF_EVENTS,
    &ACTIVITIES,
];

/// The category tallies (projection version 4): counts derived from
/// `patients` inside the store, kept in step by its triggers, never
/// written by a writer (so no statements: `index` is past the writers').
pub static CATEGORY_TALLIES: Table = Table {
    index: TABLE_COUNT,
    name: "category_tallies",
    columns: &[
        "office",
        "category",
        "lapses_on",
        "patients",
        "typical",
        "problem",
    ],
    key: &["office", "category", "lapses_on"],
};

/// The day tallies of follow-ups (projection version 5), like
/// [`CATEGORY_TALLIES`].
pub static FOLLOWUP_TALLIES: Table = Table {
    index: TABLE_COUNT,
    name: "followup_tallies",
    columns: &["day", "office", "staff", "done", "on_time"],
    key: &["day", "office", "staff"],
};

/// The day tallies of slots counted as due (projection version 5), like
/// [`CATEGORY_TALLIES`].
pub static SLOT_TALLIES: Table = Table {
    index: TABLE_COUNT,
    name: "slot_tallies",
    columns: &[
        "deadline",
        "office",
        "due",
        "due_on_time",
        "not_visited_due",
        "not_visited_on_time",
    ],
    key: &["deadline", "office"],
};

/// The tables a store derives from other projection tables itself
/// (triggers): dumped, cleared and granted with the rest.
pub static DERIVED_TABLES: [&Table; 3] = [&CATEGORY_TALLIES, &FOLLOWUP_TALLIES, &SLOT_TALLIES];

/// Every projection table a dump prints: the written ones, then the
/// derived ones.
pub fn dumped_tables() -> impl Iterator<Item = &'static Table> {
    ALL_TABLES.iter().chain(DERIVED_TABLES.iter()).copied()
}

/// Every row of the projection in one canonical text: a line per row
/// (`table|value|value…`, values as [`Cell`]'s debug form), sorted within
/// each table. Two stores, of one backend or two, hold the same
/// projection exactly when their dumps are equal.
pub fn dump_lines(table: &Table, rows: impl IntoIterator<Item = Row>) -> Vec<String> {
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|row| {
            let mut line = String::from(table.name);
            for v in row {
                line.push_str(&format!("|{v:?}"));
            }
            line
        })
        .collect();
    lines.sort();
    lines
}

/// How many tables have an `index` (the dossier tables, staff and
/// non-patient calls).
pub const TABLE_COUNT: usize = 14;

pub static STAFF: Table = Table {
    index: 10,
    name: "staff",
    columns: &["id", "name", "role", "active", "office"],
    key: &["id"],
};

pub static NONPATIENT_CALLS: Table = Table {
    index: 11,
    name: "nonpatient_calls",
    columns: &[
        "id", "log_id", "office", "at", "staff", "kind", "phone", "notes",
    ],
    key: &["id"],
};

/// Deeds credited to staff and activity participations (projection
/// version 7): home visits, deliveries handed over, typical cases marked,
/// problems resolved, patients who took part in an activity. `id` is the
/// record's id (`typical:<dossier>` for the typical mark, `resolved:<id>`
/// for a problem's resolution).
pub static STAFF_EVENTS: Table = Table {
    index: 12,
    name: "staff_events",
    columns: &[
        "id",
        "dossier_id",
        "office",
        "kind",
        "at",
        "staff",
        "activity",
        "patient_since",
    ],
    key: &["dossier_id", "id"],
};

/// An office's own activities (projection version 7), from its roster.
pub static ACTIVITIES: Table = Table {
    index: 13,
    name: "activities",
    columns: &["id", "office", "name", "kind", "starts", "ends", "source"],
    key: &["id"],
};

/// The rows of an office's own activities.
pub fn activity_rows(office: &str, activities: &[keqing_shared::activity::Activity]) -> Vec<Row> {
    activities
        .iter()
        .map(|a| {
            vec![
                Cell::Text(a.id.clone()),
                Cell::Text(office.to_string()),
                Cell::Text(a.name.clone()),
                Cell::Text(a.kind.as_str().to_string()),
                Cell::Text(fmt_date(a.starts)),
                Cell::Text(fmt_date(a.ends)),
                a.source.clone().map_or(Cell::Null, Cell::Text),
            ]
        })
        .collect()
}

/// The staff rows of an office's roster.
pub fn staff_rows(office: &str, staff: &[Staff]) -> Vec<Row> {
    staff
        .iter()
        .map(|s| {
            vec![
                Cell::Text(s.id.clone()),
                Cell::Text(s.name.clone()),
                Cell::Text(s.role.as_str().to_string()),
                Cell::Integer(i64::from(s.active)),
                Cell::Text(office.to_string()),
            ]
        })
        .collect()
}

/// The rows of one office's non-patient call log.
pub fn nonpatient_rows(
    log_id: &str,
    office: &str,
    calls: &[keqing_shared::records::NonPatientCall],
) -> Vec<Row> {
    let opt = |s: &Option<String>| s.clone().map_or(Cell::Null, Cell::Text);
    calls
        .iter()
        .map(|c| {
            vec![
                Cell::Text(c.id.clone()),
                Cell::Text(log_id.to_string()),
                Cell::Text(office.to_string()),
                Cell::Text(fmt_datetime(c.at)),
                Cell::Text(c.staff.clone()),
                Cell::Text(c.kind.clone()),
                opt(&c.phone),
                opt(&c.notes),
            ]
        })
        .collect()
}

/// Every projection row of one dossier, table by table, in the order of
/// [`DOSSIER_TABLES`] (the order of the stored digests).
pub fn dossier_rows(v: &DossierView, slots: &[Slot]) -> Vec<(&'static Table, Vec<Row>)> {
    use Cell as V;
    let text = |s: &str| V::Text(s.to_string());
    let opt_text = |s: Option<&str>| s.map_or(V::Null, |s| V::Text(s.to_string()));
    let int = |i: i64| V::Integer(i);
    let at = |t: NaiveDateTime| V::Text(fmt_datetime(t));
    let id = text(&v.id);
    // The dossier's office now: its open work (follow-up slots,
    // deliveries) and its patient row. Records count at the office where
    // they happened (`office_at` their time): a transferred patient's past
    // stays the old office's.
    let office = text(&v.office);
    let p = &v.patient;
    // A duplicate merged into another dossier keeps its history in its
    // document, but its records now live (copied) in the kept dossier:
    // projected once, there, so every report counts them once.
    let merged = v.merged_into.is_some();
    let records = |n: usize| if merged { 0 } else { n };
    let standing = keqing_shared::lists::standing(v);
    let mut tables: Vec<(&Table, Vec<Row>)> = Vec::with_capacity(DOSSIER_TABLES.len());
    tables.push((
        &PATIENTS,
        vec![vec![
            id.clone(),
            text(&v.office),
            text(&p.name),
            opt_text(p.sex.map(|s| s.chinese())),
            p.age.map_or(V::Null, int),
            opt_text(p.address.as_deref()),
            text(&p.diseases.join(",")),
            at(v.created_at),
            int(i64::from(v.typical.as_ref().is_some_and(|t| t.flagged))),
            // An erased dossier's stand-in counts in the figures of the
            // days it had records and on no list of patients: lists,
            // searches and category counts skip rows with this set.
            opt_text(if keqing_shared::lifecycle::is_erased_stand_in(&v.id) {
                Some(keqing_shared::lifecycle::ERASED_PREFIX)
            } else {
                v.merged_into.as_deref()
            }),
            int(v.conflicts.len() as i64),
            // Automerge map keys come sorted: the first is the smallest.
            opt_text(p.phones.first().map(String::as_str)),
            v.typical
                .as_ref()
                .filter(|t| t.flagged)
                .map_or(V::Null, |t| at(t.at)),
            text(standing.base.as_str()),
            opt_text(standing.lapses_on.map(fmt_date).as_deref()),
            opt_text(standing.assignee.as_deref()),
            int(i64::from(standing.open_problems)),
            standing.last_contact.map_or(V::Null, at),
            opt_text(standing.next_entry.as_deref()),
        ]],
    ));
    tables.push((
        &PATIENT_PHONES,
        p.phones
            .iter()
            .map(|ph| vec![text(ph), id.clone()])
            .collect(),
    ));
    tables.push((
        &CALLS,
        v.calls
            .iter()
            .take(records(v.calls.len()))
            .map(|c| {
                vec![
                    text(&c.id),
                    id.clone(),
                    at(c.at),
                    text(&c.staff),
                    text(&c.caller_phone),
                    text(&c.source),
                    opt_text(c.disease.as_deref()),
                    text(v.office_at(c.at)),
                ]
            })
            .collect(),
    ));
    tables.push((
        &VISITS,
        v.visits
            .iter()
            .take(records(v.visits.len()))
            .map(|x| {
                vec![
                    text(&x.id),
                    id.clone(),
                    at(x.at),
                    text(&x.staff),
                    int(i64::from(x.purchased)),
                    text(v.office_at(x.at)),
                    // Why a visit that did not buy did not, as stored (a
                    // list's name, `其他：<text>`, or text typed before
                    // there was a list): reports count it under its label
                    // and list what was typed under 其他.
                    match (&x.reason_not_bought, x.purchased) {
                        (_, true) => V::Null,
                        (Some(r), false) => text(r),
                        (None, false) => text(NotBoughtReason::Other.chinese()),
                    },
                ]
            })
            .collect(),
    ));
    tables.push((
        &PURCHASES,
        v.purchases
            .iter()
            .zip(purchase_orders(&v.purchases))
            .take(records(v.purchases.len()))
            .map(|(x, order)| {
                vec![
                    text(&x.id),
                    id.clone(),
                    at(x.at),
                    text(&x.staff),
                    text(&x.product),
                    int(x.quantity),
                    int(x.amount_fen),
                    opt_text(x.runout.map(fmt_date).as_deref()),
                    int(i64::from(order.nth)),
                    opt_text(order.prev_runout.map(fmt_date).as_deref()),
                    text(v.office_at(x.at)),
                ]
            })
            .collect(),
    ));
    tables.push((
        &FOLLOWUPS,
        v.followups
            .iter()
            .zip(followups_on_time(
                &v.followups.iter().map(|f| f.at).collect::<Vec<_>>(),
                slots,
            ))
            .take(records(v.followups.len()))
            .map(|(x, on_time)| {
                vec![
                    text(&x.id),
                    id.clone(),
                    at(x.at),
                    text(&x.staff),
                    text(&x.kind),
                    int(i64::from(on_time)),
                    text(v.office_at(x.at)),
                ]
            })
            .collect(),
    ));
    let mut contacts: Vec<Row> = v
        .hospital_stays
        .iter()
        .take(records(v.hospital_stays.len()))
        .map(|x| {
            vec![
                text(&x.id),
                id.clone(),
                text(keqing_shared::records::HospitalStay::COLLECTION),
                at(x.at),
                text(&x.staff),
            ]
        })
        .collect();
    for (kind, list) in [
        (
            keqing_shared::records::Greeting::COLLECTION,
            v.greetings.iter().map(|g| &g.0).collect::<Vec<_>>(),
        ),
        (
            keqing_shared::records::HomeVisit::COLLECTION,
            v.home_visits.iter().map(|g| &g.0).collect(),
        ),
    ] {
        contacts.extend(list.into_iter().take(records(usize::MAX)).map(|x| {
            vec![
                text(&x.id),
                id.clone(),
                text(kind),
                at(x.at),
                text(&x.staff),
            ]
        }));
    }
    contacts.extend(
        v.deliveries
            .iter()
            .take(records(v.deliveries.len()))
            .map(|x| {
                vec![
                    text(&x.id),
                    id.clone(),
                    text(keqing_shared::records::Delivery::COLLECTION),
                    at(x.at),
                    text(&x.staff),
                ]
            }),
    );
    tables.push((&CONTACTS, contacts));
    tables.push((
        &PROBLEMS,
        v.problems
            .iter()
            .take(records(v.problems.len()))
            .map(|x| {
                let state = serde_json::to_value(x.state)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_string))
                    .unwrap_or_default();
                vec![
                    text(&x.id),
                    id.clone(),
                    at(x.at),
                    V::Text(state),
                    x.resolved_at.map_or(V::Null, at),
                    text(v.office_at(x.at)),
                ]
            })
            .collect(),
    ));
    tables.push((
        &DELIVERIES,
        v.deliveries
            .iter()
            .take(records(v.deliveries.len()))
            .map(|x| {
                vec![
                    text(&x.id),
                    id.clone(),
                    office.clone(),
                    at(x.at),
                    text(&x.staff),
                    opt_text(x.purchase.as_deref()),
                    opt_text(x.product.as_deref()),
                    x.quantity.map_or(V::Null, int),
                    opt_text(x.address.as_deref()),
                    opt_text(x.due.map(fmt_date).as_deref()),
                    text(x.state().as_str()),
                    opt_text(x.status_reason.as_deref()),
                    x.settled_at.map_or(V::Null, at),
                ]
            })
            .collect(),
    ));
    tables.push((
        &SLOTS,
        slots
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let settled = s.satisfied_at.or(s.closed_at).map(|t| fmt_date(t.date()));
                vec![
                    id.clone(),
                    int(n as i64),
                    text(s.cadence.as_str()),
                    text(&s.reason),
                    s.day.map_or(V::Null, int),
                    at(s.anchor),
                    V::Text(fmt_date(s.due_from)),
                    V::Text(fmt_date(s.deadline)),
                    s.satisfied_at.map_or(V::Null, at),
                    s.closed_at.map_or(V::Null, at),
                    // A slot that never settles sorts after every date.
                    V::Text(settled.unwrap_or_else(|| "9999-12-31".to_string())),
                    office.clone(),
                    int(i64::from(counts_as_due(s))),
                    int(i64::from(s.on_time())),
                ]
            })
            .collect(),
    ));
    tables.push((&STAFF_EVENTS, staff_event_rows(v)));
    tables
}

/// The [`STAFF_EVENTS`] rows of a dossier (none for one merged into
/// another: its records count there).
pub fn staff_event_rows(v: &DossierView) -> Vec<Row> {
    use keqing_shared::records::{DeliveryStatus, ProblemState};
    use keqing_shared::report::StaffEventKind as K;
    if v.merged_into.is_some() {
        return Vec::new();
    }
    let row = |id: String, kind: K, at: NaiveDateTime, staff: &str| {
        vec![
            Cell::Text(id),
            Cell::Text(v.id.clone()),
            Cell::Text(v.office_at(at).to_string()),
            Cell::Text(kind.as_str().to_string()),
            Cell::Text(fmt_datetime(at)),
            Cell::Text(staff.to_string()),
            Cell::Null,
            Cell::Null,
        ]
    };
    let mut out: Vec<Row> = Vec::new();
    out.extend(
        v.home_visits
            .iter()
            .map(|h| row(h.0.id.clone(), K::HomeVisit, h.0.at, &h.0.staff)),
    );
    out.extend(
        v.deliveries
            .iter()
            .filter(|d| d.state() == DeliveryStatus::Delivered)
            .map(|d| {
                row(
                    d.id.clone(),
                    K::Delivery,
                    d.settled_at.unwrap_or(d.at),
                    d.settled_by.as_deref().unwrap_or(&d.staff),
                )
            }),
    );
    if let Some(t) = v.typical.as_ref().filter(|t| t.flagged) {
        out.push(row(format!("typical:{}", v.id), K::Typical, t.at, &t.staff));
    }
    out.extend(v.problems.iter().filter_map(|p| {
        let at = p
            .resolved_at
            .filter(|_| p.state == ProblemState::Resolved)?;
        Some(row(
            format!("resolved:{}", p.id),
            K::ProblemResolved,
            at,
            p.resolver(),
        ))
    }));
    out.extend(v.participations.iter().map(|p| {
        let mut r = row(p.id.clone(), K::Joined, p.at, &p.staff);
        r[6] = Cell::Text(p.activity.clone());
        r[7] = Cell::Text(fmt_datetime(v.created_at));
        r
    }));
    out
}

/// A dossier's projection rows ([`dossier_rows`]) and each table's
/// [`rows_digest`]: pure work, done on whichever thread derived the view
/// (a first sync's merging threads), so the thread writing them only runs
/// the statements.
pub struct DossierRows {
    pub id: String,
    pub tables: Vec<(&'static Table, Vec<Row>)>,
    pub digests: Vec<u64>,
}

impl DossierRows {
    pub fn of(v: &DossierView, slots: &[Slot]) -> DossierRows {
        let tables = dossier_rows(v, slots);
        let digests = tables.iter().map(|(_, rows)| rows_digest(rows)).collect();
        DossierRows {
            id: v.id.clone(),
            tables,
            digests,
        }
    }
}

/// A dossier's table digests (8 bytes per table, in the order of
/// [`dossier_rows`]), against the ones a store holds: which tables' rows
/// changed and must be written, and the bytes to store.
pub struct Digests {
    pub bytes: Vec<u8>,
    pub changed: Vec<bool>,
    /// The stored digests differ from these (or there are none): store
    /// these.
    pub replace_stored: bool,
}

impl Digests {
    pub fn of(tables: &[(&Table, Vec<Row>)], stored: Option<&[u8]>) -> Digests {
        let digests: Vec<u64> = tables.iter().map(|(_, rows)| rows_digest(rows)).collect();
        Digests::against(&digests, stored)
    }

    /// The same, from each table's [`rows_digest`] computed before.
    pub fn against(digests: &[u64], stored: Option<&[u8]>) -> Digests {
        let mut bytes = Vec::with_capacity(8 * digests.len());
        let mut changed = Vec::with_capacity(digests.len());
        for (k, digest) in digests.iter().enumerate() {
            let digest = digest.to_le_bytes();
            changed.push(
                stored
                    .and_then(|s| s.get(8 * k..8 * k + 8))
                    .is_none_or(|s| s != digest),
            );
            bytes.extend_from_slice(&digest);
        }
        let replace_stored = stored != Some(bytes.as_slice());
        Digests {
            bytes,
            changed,
            replace_stored,
        }
    }
}

/// FNV-1a (64 bits) over the rows, each value tagged with its type and
/// length: stable across builds and platforms, unlike std's hasher.
pub fn rows_digest(rows: &[Row]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&(rows.len() as u64).to_le_bytes());
    for row in rows {
        eat(&(row.len() as u64).to_le_bytes());
        for v in row {
            match v {
                // The tags of SQLite's types (2 was REAL, 4 BLOB), so the
                // digests stored before these values existed still match.
                Cell::Null => eat(&[0]),
                Cell::Integer(i) => {
                    eat(&[1]);
                    eat(&i.to_le_bytes());
                }
                Cell::Text(t) => {
                    eat(&[3]);
                    eat(&(t.len() as u64).to_le_bytes());
                    eat(t.as_bytes());
                }
            }
        }
    }
    h
}
pub static PATIENTS: Table = Table {
    index: 0,
    name: "patients",
    columns: &[
        "dossier_id",
        "office",
        "name",
        "sex",
        "age",
        "address",
        "diseases",
        "created_at",
        "typical",
        "merged_into",
        "conflicts",
        "phone",
        "typical_at",
        "category",
        "lapses_on",
        "assignee",
        "open_problems",
        "last_contact",
        "next_entry",
    ],
    key: &["dossier_id"],
};
pub static PATIENT_PHONES: Table = Table {
    index: 1,
    name: "patient_phones",
    columns: &["phone", "dossier_id"],
    key: &["phone", "dossier_id"],
};
pub static CALLS: Table = Table {
    index: 2,
    name: "calls",
    columns: &[
        "id",
        "dossier_id",
        "at",
        "staff",
        "caller_phone",
        "source",
        "disease",
        "office",
    ],
    key: &["dossier_id", "id"],
};
pub static VISITS: Table = Table {
    index: 3,
    name: "visits",
    columns: &[
        "id",
        "dossier_id",
        "at",
        "staff",
        "purchased",
        "office",
        "reason",
    ],
    key: &["dossier_id", "id"],
};
pub static PURCHASES: Table = Table {
    index: 4,
    name: "purchases",
    columns: &[
        "id",
        "dossier_id",
        "at",
        "staff",
        "product",
        "quantity",
        "amount_fen",
        "runout",
        "nth",
        "prev_runout",
        "office",
    ],
    key: &["dossier_id", "id"],
};
pub static FOLLOWUPS: Table = Table {
    index: 5,
    name: "followups",
    columns: &[
        "id",
        "dossier_id",
        "at",
        "staff",
        "kind",
        "on_time",
        "office",
    ],
    key: &["dossier_id", "id"],
};
pub static DELIVERIES: Table = Table {
    index: 8,
    name: "deliveries",
    columns: &[
        "id",
        "dossier_id",
        "office",
        "at",
        "staff",
        "purchase",
        "product",
        "quantity",
        "address",
        "due",
        "status",
        "status_reason",
        "settled_at",
    ],
    key: &["dossier_id", "id"],
};
pub static CONTACTS: Table = Table {
    index: 6,
    name: "contacts",
    columns: &["id", "dossier_id", "kind", "at", "staff"],
    key: &["dossier_id", "id"],
};
pub static PROBLEMS: Table = Table {
    index: 7,
    name: "problems",
    columns: &["id", "dossier_id", "at", "state", "resolved_at", "office"],
    key: &["dossier_id", "id"],
};
pub static SLOTS: Table = Table {
    index: 9,
    name: "slots",
    columns: &[
        "dossier_id",
        "n",
        "cadence",
        "reason",
        "day",
        "anchor",
        "due_from",
        "deadline",
        "satisfied_at",
        "closed_at",
        "settled_on",
        "office",
        "due_counted",
        "on_time",
    ],
    key: &["dossier_id", "n"],
};
