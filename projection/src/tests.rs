//! The SQL of the slot counts against the definitions in the shared crate.

use super::*;
use keqing_shared::dossier::Dossier;
use keqing_shared::followup::SlotStatus;
use keqing_shared::report::counts_as_due;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 1).unwrap() + chrono::Duration::days(n as i64)
}

fn random_slot(rng: &mut Rng) -> Slot {
    let cadence = [
        Cadence::NotVisited,
        Cadence::NotBought,
        Cadence::AfterPurchase,
        Cadence::RunOut,
        Cadence::Special,
    ][rng.below(5) as usize];
    let due = rng.below(40);
    let deadline = due + rng.below(4);
    let hour = 10 + rng.below(8) as u32;
    let at = |n: u64| day(n).and_hms_opt(hour, 0, 0).unwrap();
    let (kind, shift) = (rng.below(3), rng.below(10));
    let (satisfied_at, closed_at) = match kind {
        0 => (Some(at(due.saturating_sub(1) + shift)), None),
        1 => (None, Some(at(due.saturating_sub(3) + shift))),
        _ => (None, None),
    };
    Slot {
        cadence,
        reason: "r".into(),
        day: None,
        anchor: day(due).and_hms_opt(8, 0, 0).unwrap() - chrono::Duration::days(1),
        due_from: day(due),
        deadline: day(deadline),
        satisfied_at,
        closed_at,
    }
}

#[test]
fn slot_counts_in_sql_match_the_shared_definitions() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut rng = Rng(11);
    let mut all: Vec<(String, Slot)> = Vec::new();
    for i in 0..60 {
        let office = ["44", "33", "11"][i % 3];
        let created = day(0).and_hms_opt(9, 0, 0).unwrap();
        let (d, _) = Dossier::create(
            &format!("d{i}"),
            office,
            created,
            automerge::ActorId::from(&b"test"[..]),
            1,
        )
        .unwrap();
        let view = d.view().unwrap();
        let slots: Vec<Slot> = (0..rng.below(12)).map(|_| random_slot(&mut rng)).collect();
        project_dossier(&conn, &view, &slots).unwrap();
        all.extend(slots.into_iter().map(|s| (office.to_string(), s)));
    }
    assert!(all.len() > 200);
    for (from, to) in [(0, 0), (5, 9), (10, 10), (12, 30), (0, 45), (38, 44)] {
        let (from, to) = (day(from), day(to));
        for office in [None, Some("44")] {
            let mut want: std::collections::BTreeMap<String, SlotCounts> = Default::default();
            for (o, s) in all.iter().filter(|(o, _)| office.is_none_or(|x| x == o)) {
                let c = want.entry(o.clone()).or_insert_with(|| SlotCounts {
                    office: o.clone(),
                    ..Default::default()
                });
                if s.deadline >= from && s.deadline <= to && counts_as_due(s) {
                    c.due += 1;
                    c.due_on_time += u64::from(s.on_time());
                    if s.cadence == Cadence::NotVisited {
                        c.not_visited_due += 1;
                        c.not_visited_on_time += u64::from(s.on_time());
                    }
                }
                c.overdue += u64::from(s.status_on(to) == SlotStatus::Overdue);
            }
            let want: Vec<SlotCounts> = want
                .into_values()
                .filter(|c| {
                    *c != SlotCounts {
                        office: c.office.clone(),
                        ..Default::default()
                    }
                })
                .collect();
            let got = slot_counts(&conn, office, from, to).unwrap();
            assert_eq!(got, want, "{from}..={to} office {office:?}");
        }
    }
}

/// A fresh projection store and a new dossier's view.
fn store_and_empty_dossier() -> (Connection, DossierView) {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let (d, _) = Dossier::create(
        "d1",
        "44",
        day(0).and_hms_opt(9, 0, 0).unwrap(),
        automerge::ActorId::from(&b"test"[..]),
        1,
    )
    .unwrap();
    (conn, d.view().unwrap())
}

#[test]
fn projecting_again_changes_nothing() {
    let (conn, view) = store_and_empty_dossier();
    let mut rng = Rng(5);
    let slots: Vec<Slot> = (0..10).map(|_| random_slot(&mut rng)).collect();
    project_dossier(&conn, &view, &slots).unwrap();
    let first = dump(&conn).unwrap();
    project_dossier(&conn, &view, &slots).unwrap();
    assert_eq!(dump(&conn).unwrap(), first);
    // Fewer slots: the stale rows (and their R*Tree entries) go.
    project_dossier(&conn, &view, &slots[..3]).unwrap();
    assert_eq!(slot_rows_and_spans(&conn), (3, open_spans(&slots[..3])));
}

/// How many slots the store holds, and how many spans its R*Tree does.
fn slot_rows_and_spans(conn: &Connection) -> (i64, i64) {
    conn.query_row(
        "SELECT (SELECT count(*) FROM slots), (SELECT count(*) FROM slot_spans)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// How many of `slots` have a span on the list that is not empty: the
/// ones the R*Tree holds.
fn open_spans(slots: &[Slot]) -> i64 {
    slots
        .iter()
        .filter(|s| {
            s.satisfied_at
                .or(s.closed_at)
                .is_none_or(|t| t.date() > s.due_from)
        })
        .count() as i64
}

/// The first column of every row `sql` selects, as text.
fn strings(conn: &Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// An edit's update names only the columns it changes. SQLite rewrites
/// the entry of every index over a column an UPDATE names, changed or
/// not: a follow-up naming the patient's name again moved its entry of
/// `patients_name_age` out and back, a page at a random place of a large
/// store for every dossier followed up (BENCHMARKS.md, "A day of office
/// work"). Temporary triggers on the columns tell which an update named.
#[test]
fn an_edit_updates_only_the_columns_it_changes() {
    use keqing_shared::records::FollowUp;
    let (conn, mut view) = store_and_empty_dossier();
    view.patient.name = "王伟".into();
    view.patient.age = Some(61);
    project_dossier(&conn, &view, &[]).unwrap();
    conn.execute_batch(
        "CREATE TEMP TABLE named (col TEXT);
         CREATE TEMP TRIGGER name_named AFTER UPDATE OF name, age ON patients
         BEGIN INSERT INTO named VALUES ('name'); END;
         CREATE TEMP TRIGGER last_contact_named AFTER UPDATE OF last_contact ON patients
         BEGIN INSERT INTO named VALUES ('last_contact'); END;",
    )
    .unwrap();
    let named = |conn: &Connection| strings(conn, "SELECT col FROM named ORDER BY rowid");
    // A follow-up: the last contact changes, the name does not.
    view.followups.push(FollowUp {
        id: "f1".into(),
        at: day(2).and_hms_opt(10, 0, 0).unwrap(),
        staff: "赵敏".into(),
        kind: "回访".into(),
        outcome: "服药正常".into(),
        next_entry: None,
    });
    project_dossier(&conn, &view, &[]).unwrap();
    assert_eq!(named(&conn), ["last_contact"]);
    // A new name is written, and its index entry moves.
    view.patient.name = "王芳".into();
    project_dossier(&conn, &view, &[]).unwrap();
    assert_eq!(named(&conn), ["last_contact", "name"]);
    // What the edits left is what a projection from scratch stores.
    let (fresh, _) = store_and_empty_dossier();
    project_dossier(&fresh, &view, &[]).unwrap();
    assert_eq!(dump(&conn).unwrap(), dump(&fresh).unwrap());
}

#[test]
fn digests_skip_only_unchanged_tables_and_go_with_a_clear() {
    let (conn, view) = store_and_empty_dossier();
    let mut rng = Rng(9);
    let slots: Vec<Slot> = (0..6).map(|_| random_slot(&mut rng)).collect();
    project_dossier(&conn, &view, &slots).unwrap();
    let first = dump(&conn).unwrap();
    // A row changed behind the projection's back stays as it is while the
    // slots' digest matches: the table is not read again...
    conn.execute("UPDATE slots SET reason = 'tampered' WHERE n = 0", [])
        .unwrap();
    project_dossier(&conn, &view, &slots).unwrap();
    let tampered: i64 = conn
        .query_row(
            "SELECT count(*) FROM slots WHERE reason = 'tampered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tampered, 1);
    // ...and is compared again as soon as the dossier's slots change.
    let mut more = slots.clone();
    more.push(random_slot(&mut rng));
    project_dossier(&conn, &view, &more).unwrap();
    project_dossier(&conn, &view, &slots).unwrap();
    assert_eq!(dump(&conn).unwrap(), first);
    // A cleared projection is written again in full, not skipped.
    clear(&conn).unwrap();
    project_dossier(&conn, &view, &slots).unwrap();
    assert_eq!(dump(&conn).unwrap(), first);
}

#[test]
fn a_new_dossier_inserted_unread_is_what_a_full_projection_stores() {
    let (full, view) = store_and_empty_dossier();
    let (new, _) = store_and_empty_dossier();
    let mut rng = Rng(13);
    let slots: Vec<Slot> = (0..8).map(|_| random_slot(&mut rng)).collect();
    project_dossier(&full, &view, &slots).unwrap();
    project_new_dossier(&new, &view, &slots).unwrap();
    let digests = |c: &Connection| -> Vec<u8> {
        c.query_row("SELECT digests FROM patients", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(dump(&new).unwrap(), dump(&full).unwrap());
    assert_eq!(digests(&new), digests(&full));
    // Later edits go the usual way from there.
    project_dossier(&new, &view, &slots[..2]).unwrap();
    project_dossier(&full, &view, &slots[..2]).unwrap();
    assert_eq!(dump(&new).unwrap(), dump(&full).unwrap());
    assert_eq!(slot_rows_and_spans(&new), (2, open_spans(&slots[..2])));
}

/// A released migration's text never changes: stores that ran it have the
/// tables it made, and a store made later must end up with the same ones.
/// Changing the projection means a new version (a new frozen text and a
/// migration to it), not editing these.
#[test]
fn released_schema_texts_are_frozen() {
    use sha2::Digest;
    let hex = |s: &str| -> String {
        sha2::Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for (name, text, pinned) in [
        (
            "V1_TABLES",
            V1_TABLES,
            "7af18757a1f2fcf269d9b1dde8a308d6b69a284d1b38e8412418113ae7797629",
        ),
        (
            "V1_DIGESTS",
            V1_DIGESTS,
            "e917c79186d07d0fbc7b9e13938e832a6b983727a2dd7d52034eb9e6e45d7516",
        ),
        (
            "REPLACE_WITH_V2",
            REPLACE_WITH_V2,
            "b8004179b609ed67eb75cdc55c5123e86ecd823b5b282fb2561097990da963dc",
        ),
        (
            "REPLACE_WITH_V3",
            REPLACE_WITH_V3,
            "7d1630c6b83afd20eb304c0b36e41d5e24def3a28f770cf23847d54d5ccd7856",
        ),
        (
            "V4_ADDITIONS",
            V4_ADDITIONS,
            "0c289ca328bd2faaa244641292ba37a2a4d29de4ad5ae618465def46b226c8f3",
        ),
        (
            "V5_ADDITIONS",
            V5_ADDITIONS,
            "cc1ff6cb22a8bb323f528c8ae9726162deddd37245631295b92df337fa1e05f1",
        ),
        (
            "V6_CHANGES",
            V6_CHANGES,
            "241f3c6d2a244a66fa3cdaaeb736d927c02f7b4b333774d7abf722415e1f2509",
        ),
        (
            "V7_ADDITIONS",
            V7_ADDITIONS,
            "c2830499196c4a8020ed3895db97ed3d8b499d72cd4930cf8c5fe6ea6fad022f",
        ),
        (
            "V8_CHANGES",
            V8_CHANGES,
            "51ff4c98640b5b957b06842c4eaac66a8a0495fd4e1d9fb5b57305ec0316c4c9",
        ),
        (
            "V9_CHANGES",
            V9_CHANGES,
            "d49b2bf0060052c1ad91eb29a8d5a8303815cf0d4f5026a9554df10c92ce3153",
        ),
        (
            "V10_ADDITIONS",
            V10_ADDITIONS,
            "fe222277ca812943091f67ffd1a0ffb3c54919461ba3bcbdead8be53252d4fcc",
        ),
    ] {
        assert_eq!(
            hex(text),
            pinned,
            "{name} was edited after release: make a new version and a migration to it"
        );
    }
}

/// Each replacing version replaces whatever an older store holds: the
/// tables of any earlier shape go, today's come, and rows can be written
/// again, whether a store takes the versions one after another (as a
/// migrating store does) or the latest straight from an old shape.
#[test]
fn replacing_gives_the_current_tables_from_any_earlier_shape() {
    let schema = |c: &Connection| {
        strings(
            c,
            "SELECT coalesce(sql, name) FROM sqlite_master ORDER BY name",
        )
    };
    let fresh = Connection::open_in_memory().unwrap();
    fresh.execute_batch(SCHEMA).unwrap();
    for steps in [
        [&[REPLACE_WITH_V2][..], &FROM_V3[..]].concat(),
        FROM_V3.to_vec(),
    ] {
        let conn = Connection::open_in_memory().unwrap();
        // The R*Tree as it was before 3885f6e, with a row.
        conn.execute_batch(
            "CREATE TABLE slots (dossier_id TEXT, n INTEGER);
             CREATE VIRTUAL TABLE slot_spans USING rtree_i32(id, first_day, settled_day, +office, +deadline_day);
             INSERT INTO slot_spans VALUES (1, 2, 3, '44', 5);",
        )
        .unwrap();
        for step in steps {
            conn.execute_batch(step).unwrap();
        }
        assert_eq!(schema(&conn), schema(&fresh));
        let (_, view) = store_and_empty_dossier();
        project_dossier(&conn, &view, &[]).unwrap();
    }
}

/// The category figures as the report had them before the tallies: one
/// pass over every live patient. The oracle for the tallies' triggers.
fn category_counts_by_scan(conn: &Connection, day: NaiveDate) -> Vec<CategoryCounts> {
    let mut stmt = conn
        .prepare(
            "SELECT office, category, count(*),
                    sum(category <> 'stopped' AND lapses_on <= ?1), sum(typical),
                    sum(open_problems > 0)
             FROM patients WHERE merged_into IS NULL GROUP BY office, category",
        )
        .unwrap();
    let tallies: Vec<CategoryTally> = stmt
        .query_map([fmt_date(day)], |r| {
            let n = |i| r.get::<_, Option<i64>>(i).map(|n| n.unwrap_or(0) as u64);
            Ok(CategoryTally {
                office: r.get(0)?,
                category: r.get(1)?,
                count: n(2)?,
                lapsed: n(3)?,
                typical: n(4)?,
                problem: n(5)?,
            })
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    fold_category_counts(tallies)
}

/// Random writes to `patients` of every kind the projection makes (new
/// dossiers, a category, lapse date or flag changed, a merge, an office
/// moved, a row deleted, an upsert that changes nothing the tallies
/// count): after each burst the tallies give exactly the counts a scan of
/// the patients gives, on several days; and a store filled before version
/// 4 gets the same tallies from the migration.
#[test]
fn category_tallies_follow_every_write_to_patients() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut rng = Rng(23);
    let categories = Category::ALL.map(Category::as_str);
    let lapse = |rng: &mut Rng| -> Option<String> {
        (rng.below(3) > 0).then(|| fmt_date(day(rng.below(30))))
    };
    let upsert = |conn: &Connection, rng: &mut Rng, id: u64, merged: Option<&str>| {
        conn.execute(
            "INSERT INTO patients (dossier_id, office, name, diseases, created_at, typical,
                                   merged_into, conflicts, category, lapses_on, open_problems,
                                   last_contact)
             VALUES (?1, ?2, 'n', '', '2026-10-01T09:00:00', ?3, ?4, 0, ?5, ?6, ?7, ?8)
             ON CONFLICT (dossier_id) DO UPDATE SET office = excluded.office,
                 typical = excluded.typical, merged_into = excluded.merged_into,
                 category = excluded.category, lapses_on = excluded.lapses_on,
                 open_problems = excluded.open_problems, last_contact = excluded.last_contact",
            params![
                format!("d{id}"),
                ["44", "33", "11"][rng.below(3) as usize],
                rng.below(2) as i64,
                merged,
                categories[rng.below(categories.len() as u64) as usize],
                lapse(rng),
                rng.below(3) as i64,
                fmt_date(day(rng.below(30))),
            ],
        )
        .unwrap();
    };
    let check = |conn: &Connection, when: &str| {
        for d in [0, 7, 15, 29, 40] {
            assert_eq!(
                category_counts(conn, None, day(d)).unwrap(),
                category_counts_by_scan(conn, day(d)),
                "{when}, day {d}"
            );
            assert_eq!(
                category_counts(conn, Some("33"), day(d)).unwrap(),
                category_counts_by_scan(conn, day(d))
                    .into_iter()
                    .filter(|c| c.office == "33")
                    .collect::<Vec<_>>(),
                "{when}, office 33, day {d}"
            );
        }
    };
    for id in 0..300 {
        upsert(&conn, &mut rng, id, None);
    }
    check(&conn, "after the inserts");
    for burst in 0..6 {
        for _ in 0..150 {
            let id = rng.below(320);
            match rng.below(10) {
                0 => {
                    conn.execute(
                        "DELETE FROM patients WHERE dossier_id = ?1",
                        [format!("d{id}")],
                    )
                    .unwrap();
                }
                1 => upsert(&conn, &mut rng, id, Some("d0")),
                2 => {
                    // Only what the tallies ignore.
                    conn.execute(
                        "UPDATE patients SET last_contact = '2026-12-01', name = 'x'
                         WHERE dossier_id = ?1",
                        [format!("d{id}")],
                    )
                    .unwrap();
                }
                _ => upsert(&conn, &mut rng, id, None),
            }
        }
        check(&conn, &format!("after burst {burst}"));
    }
    // No row stays behind at zero, none goes negative.
    let (zero, negative): (i64, i64) = conn
        .query_row(
            "SELECT sum(patients = 0), sum(patients < 0 OR typical < 0 OR problem < 0)
             FROM category_tallies",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((zero, negative), (0, 0));

    // The migration fills the tallies of a version-3 store from its rows.
    let old = Connection::open_in_memory().unwrap();
    old.execute_batch(REPLACE_WITH_V3).unwrap();
    type PatientTallied = (
        String,
        String,
        i64,
        Option<String>,
        String,
        Option<String>,
        i64,
    );
    let rows: Vec<PatientTallied> = conn
        .prepare(
            "SELECT dossier_id, office, typical, merged_into, category, lapses_on, open_problems
             FROM patients",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for (id, office, typical, merged, category, lapses, problems) in &rows {
        old.execute(
            "INSERT INTO patients (dossier_id, office, name, diseases, created_at, typical,
                                   merged_into, conflicts, category, lapses_on, open_problems)
             VALUES (?1, ?2, 'n', '', '2026-10-01T09:00:00', ?3, ?4, 0, ?5, ?6, ?7)",
            params![id, office, typical, merged, category, lapses, problems],
        )
        .unwrap();
    }
    old.execute_batch(V4_ADDITIONS).unwrap();
    check(&old, "after the migration");
    assert_eq!(
        category_counts(&old, None, day(15)).unwrap(),
        category_counts(&conn, None, day(15)).unwrap()
    );
}

/// Random writes to `followups` and `slots` (inserts, moves to another
/// day, office or staff, flags flipped, slots leaving and entering the
/// due count, deletes): the day tallies always give what a scan of the
/// rows gives; and a version-4 store gets the same from the migration.
#[test]
fn day_tallies_follow_every_write_to_followups_and_slots() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut rng = Rng(31);
    let write = |conn: &Connection, rng: &mut Rng| {
        let id = rng.below(200);
        let office = ["44", "33"][rng.below(2) as usize];
        let staff = ["李娜", "王芳", "张伟"][rng.below(3) as usize];
        let at = format!(
            "{}T{:02}:00:00",
            fmt_date(day(rng.below(20))),
            8 + rng.below(10)
        );
        // One column at a time, as well as whole rows.
        let one_column = [
            "UPDATE followups SET on_time = 1 - on_time WHERE id = 'f' || ?1",
            "UPDATE followups SET staff = staff || '2' WHERE id = 'f' || ?1",
            "UPDATE followups SET at = '2026-10-05T09:00:00' WHERE id = 'f' || ?1",
            "UPDATE slots SET on_time = 1 - on_time WHERE dossier_id = 'd' || ?1",
            "UPDATE slots SET due_counted = 1 - due_counted WHERE dossier_id = 'd' || ?1",
            "UPDATE slots SET cadence = 'special' WHERE dossier_id = 'd' || ?1",
            "UPDATE slots SET deadline = '2026-10-06' WHERE dossier_id = 'd' || ?1",
            "UPDATE slots SET office = '11' WHERE dossier_id = 'd' || ?1",
            "UPDATE slots SET satisfied_at = '2026-10-03T10:00:00' WHERE dossier_id = 'd' || ?1",
        ];
        match rng.below(10) {
            0 => {
                conn.execute("DELETE FROM followups WHERE id = ?1", [format!("f{id}")])
                    .unwrap();
                conn.execute(
                    "DELETE FROM slots WHERE dossier_id = ?1",
                    [format!("d{id}")],
                )
                .unwrap();
                return;
            }
            1..=4 => {
                let sql = one_column[rng.below(one_column.len() as u64) as usize];
                conn.execute(sql, [id.to_string()]).unwrap();
                return;
            }
            _ => {}
        }
        conn.execute(
            "INSERT INTO followups (id, dossier_id, at, staff, kind, on_time, office)
             VALUES (?1, ?2, ?3, ?4, '回访', ?5, ?6)
             ON CONFLICT (dossier_id, id) DO UPDATE SET at = excluded.at, staff = excluded.staff,
                 on_time = excluded.on_time, office = excluded.office",
            params![
                format!("f{id}"),
                format!("d{id}"),
                at,
                staff,
                rng.below(2) as i64,
                office
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO slots (dossier_id, n, cadence, reason, anchor, due_from, deadline,
                                settled_on, office, due_counted, on_time)
             VALUES (?1, ?2, ?3, 'r', ?4, ?4, ?5, ?5, ?6, ?7, ?8)
             ON CONFLICT (dossier_id, n) DO UPDATE SET cadence = excluded.cadence,
                 deadline = excluded.deadline, office = excluded.office,
                 due_counted = excluded.due_counted, on_time = excluded.on_time",
            params![
                format!("d{id}"),
                rng.below(3) as i64,
                ["not_visited", "after_purchase"][rng.below(2) as usize],
                fmt_date(day(rng.below(20))),
                fmt_date(day(rng.below(25))),
                office,
                rng.below(2) as i64,
                rng.below(2) as i64,
            ],
        )
        .unwrap();
    };
    // The counts as a scan of the rows gives them (the queries the report
    // ran before the tallies), and as the report reads them now.
    type Counts = (Vec<FollowUpTally>, Vec<SlotCounts>);
    let scan = |conn: &Connection, from: NaiveDate, to: NaiveDate| -> Counts {
        let range = params![fmt_date(from), fmt_date(to)];
        let followups = conn
            .prepare(
                "SELECT office, staff, substr(at, 1, 10) AS d, count(*), sum(on_time)
                 FROM followups WHERE d >= ?1 AND d <= ?2
                 GROUP BY office, staff, d ORDER BY office, staff, d",
            )
            .unwrap()
            .query_map(range, |r| {
                Ok(FollowUpTally {
                    office: r.get(0)?,
                    staff: r.get(1)?,
                    day: read_stored_date(&r.get::<_, String>(2)?).unwrap(),
                    done: r.get::<_, i64>(3)? as u64,
                    on_time: r.get::<_, i64>(4)? as u64,
                })
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let slots = conn
            .prepare(
                "SELECT office, count(*), sum(on_time), sum(cadence = 'not_visited'),
                        sum(cadence = 'not_visited' AND on_time)
                 FROM slots WHERE deadline >= ?1 AND deadline <= ?2 AND due_counted = 1
                 GROUP BY office ORDER BY office",
            )
            .unwrap()
            .query_map(range, |r| {
                let n = |i| r.get::<_, i64>(i).map(|n| n as u64);
                Ok(SlotCounts {
                    office: r.get(0)?,
                    due: n(1)?,
                    due_on_time: n(2)?,
                    not_visited_due: n(3)?,
                    not_visited_on_time: n(4)?,
                    overdue: 0,
                })
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        (followups, slots)
    };
    let tallied = |conn: &Connection, from: NaiveDate, to: NaiveDate| -> Counts {
        let mut followups = report_rows(conn, None, from, to).unwrap().followups;
        followups.sort_by(|a, b| (&a.office, &a.staff, a.day).cmp(&(&b.office, &b.staff, b.day)));
        let slots = slot_counts(conn, None, from, to)
            .unwrap()
            .into_iter()
            .filter(|c| c.due > 0)
            .map(|c| SlotCounts { overdue: 0, ..c })
            .collect();
        (followups, slots)
    };
    let check = |conn: &Connection, when: &str| {
        for (from, to) in [(0, 0), (3, 9), (0, 30), (12, 19)] {
            let (from, to) = (day(from), day(to));
            assert_eq!(
                tallied(conn, from, to),
                scan(conn, from, to),
                "{when}, {from}..={to}"
            );
        }
    };
    for burst in 0..8 {
        for _ in 0..120 {
            write(&conn, &mut rng);
        }
        check(&conn, &format!("after burst {burst}"));
    }
    let empty: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM followup_tallies WHERE done <= 0)
                  + (SELECT count(*) FROM slot_tallies WHERE due <= 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(empty, 0, "a tally row left at zero or below");

    // The migration fills the tallies of a version-4 store from its rows.
    let old = Connection::open_in_memory().unwrap();
    old.execute_batch(REPLACE_WITH_V3).unwrap();
    old.execute_batch(V4_ADDITIONS).unwrap();
    for table in [&rows::FOLLOWUPS, &rows::SLOTS] {
        let cols = table.columns.join(", ");
        let n = table.columns.len();
        let copied: Vec<Vec<rusqlite::types::Value>> = conn
            .prepare(&format!("SELECT {cols} FROM {}", table.name))
            .unwrap()
            .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let marks = (1..=n)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        for row in copied {
            old.execute(
                &format!("INSERT INTO {} ({cols}) VALUES ({marks})", table.name),
                rusqlite::params_from_iter(row),
            )
            .unwrap();
        }
    }
    old.execute_batch(V5_ADDITIONS).unwrap();
    // (The later versions too, which the report's reads need.)
    for later in [
        V6_CHANGES,
        V7_ADDITIONS,
        V8_CHANGES,
        V9_CHANGES,
        V10_ADDITIONS,
        V11_CHANGES,
    ] {
        old.execute_batch(later).unwrap();
    }
    check(&old, "after the migration");
}

/// The R*Tree holds exactly the slots whose span on the list is not empty
/// (`settled_on > due_from`), with their days, deadline and office,
/// whatever writes reach `slots` (inserts, spans made empty or not by a
/// new `due_from` or `settled_on`, moves of deadline or office, deletes),
/// and a version-7 store's R*Tree is brought to the same by the migration;
/// the overdue counts of the tallies (version 10) are what a scan of the
/// rows finds, on a store migrated from version 9 too, and on the
/// server's, which has no R*Tree.
#[test]
fn the_span_tree_holds_exactly_the_slots_a_day_can_find() {
    let spans = |conn: &Connection, sql: &str| -> Vec<[i64; 5]> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let check = |conn: &Connection, when: &str| {
        let tree: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'slot_spans')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let want = spans(
            conn,
            "SELECT rowid, CAST(julianday(due_from) - 2451544.5 AS INTEGER),
                    CAST(julianday(settled_on) - 2451544.5 AS INTEGER),
                    CAST(julianday(deadline) - 2451544.5 AS INTEGER), CAST(office AS INTEGER)
             FROM slots WHERE settled_on > due_from ORDER BY rowid",
        );
        let held = if tree {
            spans(
                conn,
                "SELECT id, first_day, settled_day, deadline_day, office_code FROM slot_spans
                 ORDER BY id",
            )
        } else {
            Vec::new()
        };
        if tree {
            assert_eq!(held, want, "{when}");
        }
        for d in [0, 4, 9, 15, 24] {
            let to = day(d);
            let scanned: Vec<(String, u64)> = conn
                .prepare(
                    "SELECT office, count(*) FROM slots
                     WHERE due_from <= ?1 AND settled_on > ?1 AND deadline < ?1
                     GROUP BY office ORDER BY office",
                )
                .unwrap()
                .query_map([fmt_date(to)], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let stabbed: Vec<(String, u64)> = slot_counts(conn, None, to, to)
                .unwrap()
                .into_iter()
                .filter(|c| c.overdue > 0)
                .map(|c| (c.office, c.overdue))
                .collect();
            assert_eq!(stabbed, scanned, "{when}, overdue on {to}");
        }
    };
    let write = |conn: &Connection, rng: &mut Rng| {
        let dossier = format!("d{}", rng.below(60));
        let n = rng.below(3) as i64;
        let date = |rng: &mut Rng| fmt_date(day(rng.below(25)));
        match rng.below(8) {
            0 => {
                conn.execute(
                    "DELETE FROM slots WHERE dossier_id = ?1 AND n = ?2",
                    params![dossier, n],
                )
                .unwrap();
            }
            1 => {
                conn.execute(
                    "UPDATE slots SET settled_on = ?3 WHERE dossier_id = ?1 AND n = ?2",
                    params![dossier, n, date(rng)],
                )
                .unwrap();
            }
            2 => {
                conn.execute(
                    "UPDATE slots SET due_from = ?3 WHERE dossier_id = ?1 AND n = ?2",
                    params![dossier, n, date(rng)],
                )
                .unwrap();
            }
            3 => {
                conn.execute(
                    "UPDATE slots SET deadline = ?3, office = ?4 WHERE dossier_id = ?1 AND n = ?2",
                    params![dossier, n, date(rng), ["44", "33"][rng.below(2) as usize]],
                )
                .unwrap();
            }
            _ => {
                // An open slot now and then: settled on the far date.
                let settled = if rng.below(4) == 0 {
                    "9999-12-31".to_string()
                } else {
                    date(rng)
                };
                conn.execute(
                    "INSERT INTO slots (dossier_id, n, cadence, reason, anchor, due_from, deadline,
                                        settled_on, office, due_counted, on_time)
                     VALUES (?1, ?2, 'after_purchase', 'r', ?3, ?3, ?4, ?5, ?6, 1, 0)
                     ON CONFLICT (dossier_id, n) DO UPDATE SET due_from = excluded.due_from,
                         deadline = excluded.deadline, settled_on = excluded.settled_on,
                         office = excluded.office",
                    params![
                        dossier,
                        n,
                        date(rng),
                        date(rng),
                        settled,
                        ["44", "33", "11"][rng.below(3) as usize]
                    ],
                )
                .unwrap();
            }
        }
    };
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut rng = Rng(47);
    for burst in 0..8 {
        for _ in 0..150 {
            write(&conn, &mut rng);
        }
        check(&conn, &format!("after burst {burst}"));
    }
    let (spans, slots): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM slot_spans), (SELECT count(*) FROM slots)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(0 < spans && spans < slots, "{spans} spans of {slots} slots");
    // The R*Tree names a slot by its rowid, which `slots` does not declare:
    // VACUUM (`compact --vacuum`, an erasure's scrub) must keep the rowids
    // the deletes above left gaps between.
    let gaps: i64 = conn
        .query_row("SELECT max(rowid) - count(*) FROM slots", [], |r| r.get(0))
        .unwrap();
    assert!(gaps > 0, "no rowid left free by a delete");
    conn.execute_batch("VACUUM").unwrap();
    check(&conn, "after VACUUM");

    // A version-7 store, whose R*Tree holds every slot, empty spans too.
    let old = store_at_version(7);
    let mut rng = Rng(47);
    for _ in 0..600 {
        write(&old, &mut rng);
    }
    old.execute_batch(V8_CHANGES).unwrap();
    // (And the later versions, which the overdue count reads.)
    old.execute_batch(V9_CHANGES).unwrap();
    old.execute_batch(V10_ADDITIONS).unwrap();
    old.execute_batch(V11_CHANGES).unwrap();
    check(&old, "after the migration to version 8");
    for _ in 0..300 {
        write(&old, &mut rng);
    }
    check(&old, "after writes to the migrated store");

    // A version-9 store: its overdue tallies are filled from its slots.
    let old = store_at_version(9);
    let mut rng = Rng(53);
    for _ in 0..600 {
        write(&old, &mut rng);
    }
    old.execute_batch(V10_ADDITIONS).unwrap();
    old.execute_batch(V11_CHANGES).unwrap();
    check(&old, "after the migration to version 10");
    for _ in 0..300 {
        write(&old, &mut rng);
    }
    check(&old, "after writes to the store migrated to version 10");

    // The server's store, without the R*Tree.
    let server = Connection::open_in_memory().unwrap();
    server.execute_batch(SCHEMA).unwrap();
    server.execute_batch(DROP_SLOT_SPANS).unwrap();
    let mut rng = Rng(59);
    for burst in 0..4 {
        for _ in 0..200 {
            write(&server, &mut rng);
        }
        check(&server, &format!("server store, after burst {burst}"));
    }
    let tallied: i64 = server
        .query_row("SELECT count(*) FROM overdue_tallies", [], |r| r.get(0))
        .unwrap();
    assert!(tallied > 0, "no slot overdue on any day");
}

/// Each of the report's range reads is answered from one covering index
/// (no row of the table looked up one by one: at 1M dossiers a 30-day
/// report would read tens of thousands of pages at random), by office or
/// nationally.
#[test]
fn the_report_reads_its_rows_from_covering_indexes() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for (name, sql) in [
        ("calls", report_sql::CALLS),
        ("visits", report_sql::VISITS),
        ("purchases", report_sql::PURCHASES),
        ("nonpatient", report_sql::NONPATIENT),
        ("staff_events", report_sql::STAFF_EVENTS),
    ] {
        let plan = plan_of(&conn, sql);
        assert!(
            plan.len() == 1 && plan[0].contains("USING COVERING INDEX"),
            "{name}: {plan:?}"
        );
    }
    // Counted by office: the covering index's scan, then the groups.
    let plan = plan_of(&conn, report_sql::TYPICAL_COUNTS);
    assert!(
        plan[0].contains("USING COVERING INDEX patients_typical_report"),
        "typical counts: {plan:?}"
    );
}

/// The mark counts' SQL against [`MarkCounts::count_typical`] and
/// [`MarkCounts::count_problem`], on dossiers flagged and with problems
/// opened and resolved around the ranges' edges.
#[test]
fn mark_counts_in_sql_match_the_shared_definitions() {
    use keqing_shared::records::{Problem, ProblemState, TypicalCase};
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut rng = Rng(23);
    // Times at midnight, just before it and in the day, on day `n`.
    let on = |n: u64, rng: &mut Rng| {
        let (h, m, s) = [(0, 0, 0), (9, 30, 0), (23, 59, 59)][rng.below(3) as usize];
        day(n).and_hms_opt(h, m, s).unwrap()
    };
    let mut views = Vec::new();
    for i in 0..90 {
        let office = ["44", "33", "11"][i % 3];
        let (d, _) = Dossier::create(
            &format!("d{i}"),
            office,
            day(0).and_hms_opt(8, 0, 0).unwrap(),
            automerge::ActorId::from(&b"test"[..]),
            1,
        )
        .unwrap();
        let mut v = d.view().unwrap();
        if rng.below(2) == 0 {
            v.typical = Some(TypicalCase {
                // Some flags cleared again: not counted.
                flagged: rng.below(5) > 0,
                at: on(rng.below(40), &mut rng),
                staff: "李娜".into(),
                notes: None,
            });
        }
        for k in 0..rng.below(3) {
            let opened_on = rng.below(40);
            let opened = on(opened_on, &mut rng);
            let resolved =
                (rng.below(2) == 0).then(|| on(opened_on + rng.below(12), &mut rng).max(opened));
            v.problems.push(Problem {
                id: format!("p{i}-{k}"),
                at: opened,
                staff: "李娜".into(),
                description: "头晕".into(),
                state: if resolved.is_some() {
                    ProblemState::Resolved
                } else {
                    ProblemState::Open
                },
                handling_at: None,
                resolved_at: resolved,
                resolution: None,
                resolved_by: None,
            });
        }
        project_dossier(&conn, &v, &[]).unwrap();
        views.push(v);
    }
    for (from, to) in [(0, 0), (5, 9), (10, 10), (12, 30), (0, 45), (38, 44)] {
        let (from, to) = (day(from), day(to));
        for office in [None, Some("44")] {
            let mut want: std::collections::BTreeMap<String, MarkCounts> = Default::default();
            for v in views
                .iter()
                .filter(|v| office.is_none_or(|o| o == v.office))
            {
                let mut c = MarkCounts {
                    office: v.office.clone(),
                    ..Default::default()
                };
                if let Some(t) = v.typical.as_ref().filter(|t| t.flagged) {
                    c.count_typical(t.at, from, to);
                }
                for p in &v.problems {
                    c.count_problem(p.at, p.resolved_at, from, to);
                }
                want.entry(v.office.clone())
                    .or_insert_with(|| MarkCounts {
                        office: v.office.clone(),
                        ..Default::default()
                    })
                    .add(&c);
            }
            // An office the range meets no flag or problem of has no line.
            let want: Vec<MarkCounts> = want
                .into_values()
                .filter(|c| {
                    *c != MarkCounts {
                        office: c.office.clone(),
                        ..Default::default()
                    }
                })
                .collect();
            let got = mark_counts(&conn, office, from, to).unwrap();
            assert_eq!(got, want, "{from}..={to} office {office:?}");
        }
    }
}

/// Who a staff event is credited to: a delivery to who handed it over, a
/// resolution to who resolved it (the opener before that was kept); a
/// cleared typical mark and a merged dossier credit nobody.
#[test]
fn staff_events_credit_who_did_the_deed() {
    use keqing_shared::records::*;
    let (_, mut v) = store_and_empty_dossier();
    let t = |h: u32| day(1).and_hms_opt(h, 0, 0).unwrap();
    v.deliveries.push(Delivery {
        id: "dl".into(),
        at: t(9),
        staff: "李娜".into(),
        notes: None,
        purchase: None,
        product: None,
        quantity: None,
        address: None,
        due: None,
        status: Some(DeliveryStatus::Delivered),
        status_reason: None,
        settled_at: Some(t(15)),
        settled_by: Some("刘外送".into()),
    });
    v.deliveries.push(Delivery {
        id: "pending".into(),
        status: Some(DeliveryStatus::Pending),
        settled_at: None,
        settled_by: None,
        ..v.deliveries[0].clone()
    });
    let problem = Problem {
        id: "pr".into(),
        at: t(10),
        staff: "李娜".into(),
        description: "头晕".into(),
        state: ProblemState::Resolved,
        handling_at: None,
        resolved_at: Some(t(11)),
        resolution: Some("调整".into()),
        resolved_by: Some("周主管".into()),
    };
    v.problems.push(problem.clone());
    v.problems.push(Problem {
        id: "old".into(),
        resolved_by: None,
        ..problem
    });
    v.typical = Some(TypicalCase {
        flagged: false,
        at: t(12),
        staff: "李娜".into(),
        notes: None,
    });
    let credited: Vec<(String, String, String)> = rows::staff_event_rows(&v)
        .into_iter()
        .map(|r| {
            let text = |c: &rows::Cell| match c {
                rows::Cell::Text(s) => s.clone(),
                other => format!("{other:?}"),
            };
            (text(&r[0]), text(&r[3]), text(&r[5]))
        })
        .collect();
    assert_eq!(
        credited,
        [
            ("dl".into(), "delivery".into(), "刘外送".into()),
            (
                "resolved:pr".into(),
                "problem_resolved".into(),
                "周主管".into()
            ),
            (
                "resolved:old".into(),
                "problem_resolved".into(),
                "李娜".into()
            ),
        ]
    );
    v.merged_into = Some("d2".into());
    assert!(rows::staff_event_rows(&v).is_empty());
}

/// A transferred dossier: its records before the transfer are the old
/// office's rows, those after the new office's; its patient row is the new
/// office's.
#[test]
fn records_count_at_the_office_where_they_happened() {
    use keqing_shared::records::{Call, Transfer};
    let (_, mut v) = store_and_empty_dossier();
    let t = |d: u64| day(d).and_hms_opt(10, 0, 0).unwrap();
    let call = |id: &str, at| Call {
        id: id.into(),
        at,
        staff: "李娜".into(),
        caller_phone: "13800138000".into(),
        relation: None,
        source: "电视".into(),
        disease: None,
        condition: None,
        treatment: None,
        outcome: None,
    };
    v.calls = vec![call("before", t(1)), call("after", t(5))];
    v.transfers = vec![Transfer {
        id: "tr".into(),
        at: t(3),
        from: "44".into(),
        to: "11".into(),
        reason: "搬家".into(),
        by: "周主任".into(),
    }];
    v.office = "11".into();
    let tables = rows::dossier_rows(&v, &[]);
    let office_of = |table: &str, n: usize| -> Vec<rows::Cell> {
        let (t, rows) = tables.iter().find(|(t, _)| t.name == table).unwrap();
        let i = t.columns.iter().position(|c| *c == "office").unwrap();
        assert_eq!(rows.len(), n, "{table}");
        rows.iter().map(|r| r[i].clone()).collect()
    };
    let text = |s: &str| rows::Cell::Text(s.into());
    assert_eq!(office_of("calls", 2), [text("44"), text("11")]);
    assert_eq!(office_of("patients", 1), [text("11")]);
}

/// A store's indexes, as `sqlite_master` has them.
fn index_schema(conn: &Connection) -> Vec<(String, String)> {
    schema_of(conn, "index")
}

/// The triggers of a store's schema, by name.
fn trigger_schema(conn: &Connection) -> Vec<(String, String)> {
    schema_of(conn, "trigger")
}

fn schema_of(conn: &Connection, kind: &str) -> Vec<(String, String)> {
    conn.prepare(&format!("SELECT name, sql FROM sqlite_master WHERE type = '{kind}' AND sql IS NOT NULL ORDER BY name"))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The plan of one statement, each step's text.
fn plan_of(conn: &Connection, sql: &str) -> Vec<String> {
    let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let unbound = vec![rusqlite::types::Null; explain.parameter_count()];
    explain
        .query_map(rusqlite::params_from_iter(unbound), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// A bulk load sets aside only indexes the projection's own writes never
/// read, and the triggers that keep the tallies and spans: every statement
/// a projection runs finds its rows as it does in a store with every index
/// (the same query plan); the rows written meanwhile are those of an
/// ordinary store; the indexes and triggers come back exactly as the
/// schema has them, and the tables the triggers keep hold what they would
/// have kept.
#[test]
fn indexes_set_aside_spare_the_writes_and_come_back_as_they_were() {
    let (conn, view) = store_and_empty_dossier();
    conn.execute_batch(INDEXES_ASIDE).unwrap();
    let (plain, _) = store_and_empty_dossier();
    let schema = index_schema(&conn);
    let triggers = trigger_schema(&conn);
    assert!(triggers.len() >= 10, "{} triggers", triggers.len());
    // Every trigger set aside keeps a table restore_indexes fills again.
    for (name, _) in &triggers {
        assert!(
            TRIGGER_KEPT
                .iter()
                .any(|kept| name.starts_with(&format!("{}_", kept.table))),
            "{name} keeps a table restore_indexes does not fill"
        );
    }
    let aside = set_indexes_aside(&conn).unwrap();
    assert!(aside >= 10 + triggers.len(), "{aside} set aside");
    assert_eq!(
        index_schema(&conn).len(),
        schema.len() + triggers.len() - aside
    );
    assert!(trigger_schema(&conn).is_empty());
    // The report's indexes are among them...
    assert!(!index_schema(&conn).iter().any(|(n, _)| n == "calls_at"));
    // ...and what the writes read is not.
    let mut writes: Vec<String> = Vec::new();
    for table in rows::DOSSIER_TABLES {
        writes.push(table_sql(table).select.clone());
        writes.push(format!("DELETE FROM {} WHERE dossier_id = ?1", table.name));
        writes.push(table_sql(table).delete.clone());
    }
    writes.push("DELETE FROM staff WHERE office = ?1".into());
    writes.push("DELETE FROM activities WHERE office = ?1".into());
    writes.push("DELETE FROM nonpatient_calls WHERE log_id = ?1".into());
    writes.push("SELECT digests FROM patients WHERE dossier_id = ?1".into());
    // The same index for each (a delete with no trigger to hand the old
    // row to may read it through the index rather than from it alone).
    let index_used = |c: &Connection, sql: &str| -> Vec<String> {
        plan_of(c, sql)
            .into_iter()
            .map(|step| step.replace("COVERING INDEX", "INDEX"))
            .collect()
    };
    for sql in &writes {
        assert_eq!(index_used(&conn, sql), index_used(&plain, sql), "{sql}");
    }
    let mut rng = Rng(17);
    let slots: Vec<Slot> = (0..9).map(|_| random_slot(&mut rng)).collect();
    project_new_dossier(&conn, &view, &slots).unwrap();
    project_dossier(&conn, &view, &slots[..4]).unwrap();
    project_new_dossier(&plain, &view, &slots).unwrap();
    project_dossier(&plain, &view, &slots[..4]).unwrap();
    // Nothing kept them meanwhile.
    let count = |c: &Connection, table: &str| -> i64 {
        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&conn, "slot_tallies"), 0);
    assert!(count(&plain, "slot_tallies") > 0);
    assert!(count(&plain, "slot_spans") > 0);
    assert_eq!(restore_indexes(&conn).unwrap(), aside);
    assert_eq!(index_schema(&conn), schema);
    assert_eq!(trigger_schema(&conn), triggers);
    assert_eq!(dump(&conn).unwrap(), dump(&plain).unwrap());
    // The tables the triggers keep match too.
    for tally in [
        "category_tallies",
        "followup_tallies",
        "slot_tallies",
        "overdue_tallies",
        "slot_spans",
    ] {
        assert_eq!(all_rows(&conn, tally), all_rows(&plain, tally), "{tally}");
    }
    // Nothing left to build.
    assert_eq!(restore_indexes(&conn).unwrap(), 0);
    assert_eq!(index_schema(&conn), schema);
    assert_eq!(trigger_schema(&conn), triggers);
}

/// The migrations from version 3 on, in order: a store at version `v`
/// took the first `v - 2`.
const FROM_V3: [&str; 9] = [
    REPLACE_WITH_V3,
    V4_ADDITIONS,
    V5_ADDITIONS,
    V6_CHANGES,
    V7_ADDITIONS,
    V8_CHANGES,
    V9_CHANGES,
    V10_ADDITIONS,
    V11_CHANGES,
];

/// A store at projection `version` (3 to 11), made by the migrations a
/// store took to reach it.
fn store_at_version(version: usize) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    for step in &FROM_V3[..version - 2] {
        conn.execute_batch(step).unwrap();
    }
    conn
}

/// Every row of `table` as text, in the table's order.
fn all_rows(c: &Connection, table: &str) -> Vec<String> {
    c.prepare(&format!("SELECT * FROM {table}"))
        .unwrap()
        .query_map([], |r| {
            Ok((0..r.as_ref().column_count())
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Dossiers with records in every table version 9 rebuilds: calls,
/// visits, purchases, follow-ups, greetings (contacts), problems.
fn dossiers_with_records(n: usize) -> Vec<(DossierView, Vec<Slot>)> {
    use keqing_shared::records::{Call, Contact, FollowUp, Greeting, Problem, ProblemState};
    let (_, template) = store_and_empty_dossier();
    let mut rng = Rng(29);
    (0..n)
        .map(|k| {
            let mut v = template.clone();
            v.id = format!("d{k}");
            let t = |d: u64, h: u32| day(d).and_hms_opt(h, 0, 0).unwrap();
            let staff = ["李娜", "赵敏"][k % 2].to_string();
            v.calls = vec![Call {
                id: format!("c{k}"),
                at: t(k as u64 % 9, 9),
                staff: staff.clone(),
                caller_phone: format!("1380013{k:04}"),
                relation: None,
                source: "电视".into(),
                disease: Some("冠心病".into()),
                condition: None,
                treatment: None,
                outcome: None,
            }];
            v.followups = (0..1 + rng.below(4))
                .map(|f| FollowUp {
                    id: format!("f{k}-{f}"),
                    at: t(rng.below(20), 14),
                    staff: staff.clone(),
                    kind: "回访".into(),
                    outcome: "好转".into(),
                    next_entry: None,
                })
                .collect();
            v.greetings = vec![Greeting(Contact {
                id: format!("g{k}"),
                at: t(12, 10),
                staff: staff.clone(),
                notes: None,
            })];
            v.problems = vec![Problem {
                id: format!("p{k}"),
                at: t(3, 11),
                staff,
                description: "服药后头晕".into(),
                state: ProblemState::Open,
                handling_at: None,
                resolved_at: None,
                resolution: None,
                resolved_by: None,
            }];
            let slots = (0..3).map(|_| random_slot(&mut rng)).collect();
            (v, slots)
        })
        .collect()
}

/// A version-8 store migrated to version 9 holds what a store made at
/// version 9 does: the same rows (copied, not projected again: the
/// digests still hold), tallies, indexes and triggers; and it goes on
/// projecting as one would.
#[test]
fn version_9_keeps_a_version_8_stores_rows_and_tallies() {
    migrate_a_version_8_store_with_rows(false);
    // A replica that died in the middle of a first sync, its indexes and
    // triggers set aside, migrates and restores them at its next open.
    migrate_a_version_8_store_with_rows(true);
}

fn migrate_a_version_8_store_with_rows(set_aside: bool) {
    let dossiers = dossiers_with_records(40);
    let old = store_at_version(8);
    if set_aside {
        old.execute_batch(INDEXES_ASIDE).unwrap();
        assert!(set_indexes_aside(&old).unwrap() > 10);
    }
    let fresh = Connection::open_in_memory().unwrap();
    fresh.execute_batch(SCHEMA).unwrap();
    // The old store's rows inserted as they are (today's statements name
    // version 9's keys), its digests those the fresh store wrote.
    for (v, slots) in &dossiers {
        project_dossier(&fresh, v, slots).unwrap();
        for (table, rows) in rows::dossier_rows(v, slots) {
            let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
            let insert = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                table.columns.join(", "),
                marks.join(", ")
            );
            for row in rows {
                old.execute(&insert, rusqlite::params_from_iter(row.iter()))
                    .unwrap();
            }
        }
        let digests: Vec<u8> = fresh
            .query_row(
                "SELECT digests FROM patients WHERE dossier_id = ?1",
                [&v.id],
                |r| r.get(0),
            )
            .unwrap();
        old.execute(
            "INSERT INTO projection_digests VALUES (?1, ?2)",
            params![v.id, digests],
        )
        .unwrap();
    }
    let followups = all_rows(&old, "followups").len();
    assert!(followups > 40, "{followups} follow-ups");
    old.execute_batch(V9_CHANGES).unwrap();
    old.execute_batch(V10_ADDITIONS).unwrap();
    old.execute_batch(V11_CHANGES).unwrap();
    if set_aside {
        restore_indexes(&old).unwrap();
    }
    assert_eq!(dump(&old).unwrap(), dump(&fresh).unwrap());
    // Version 11 took each dossier's digests into its patient row, as the
    // fresh store wrote them there: the next edit of a dossier skips the
    // tables it leaves alone, with no projection again.
    let digests = |c: &Connection| -> Vec<(String, Option<Vec<u8>>)> {
        c.prepare("SELECT dossier_id, digests FROM patients ORDER BY dossier_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let migrated = digests(&old);
    assert_eq!(migrated.len(), dossiers.len());
    assert!(migrated.iter().all(|(_, d)| d.is_some()));
    assert_eq!(migrated, digests(&fresh));
    assert!(
        !schema_of(&old, "table")
            .iter()
            .any(|(name, _)| name == "projection_digests")
    );
    for tally in [
        "followup_tallies",
        "slot_tallies",
        "category_tallies",
        "overdue_tallies",
    ] {
        assert_eq!(all_rows(&old, tally), all_rows(&fresh, tally), "{tally}");
    }
    assert_eq!(all_rows(&old, "slot_spans"), all_rows(&fresh, "slot_spans"));
    assert_eq!(index_schema(&old), index_schema(&fresh));
    assert_eq!(trigger_schema(&old), trigger_schema(&fresh));
    // Keyed by dossier: no key on the record id alone, no index on the
    // dossier beside the key.
    let indexes: Vec<String> = index_schema(&old).into_iter().map(|(n, _)| n).collect();
    for gone in ["followups_dossier", "calls_dossier", "problems_dossier"] {
        assert!(!indexes.iter().any(|n| n == gone), "{gone}");
    }
    // Writes go on alike, and the follow-ups' tallies follow them.
    for (v, slots) in dossiers.iter().take(10) {
        let mut v = v.clone();
        v.followups.pop();
        project_dossier(&old, &v, &slots[..1]).unwrap();
        project_dossier(&fresh, &v, &slots[..1]).unwrap();
    }
    assert_eq!(dump(&old).unwrap(), dump(&fresh).unwrap());
    assert_eq!(
        all_rows(&old, "followup_tallies"),
        all_rows(&fresh, "followup_tallies")
    );
    assert_eq!(all_rows(&old, "followups").len(), followups - 10);
}

/// A report reads one snapshot: a visit committed by another connection
/// after the report has read its calls (here: while it prepares its
/// visits query) is not in it, so calls and visits come from one state of
/// the store; the next report has it.
#[test]
fn a_report_reads_one_snapshot_while_the_projector_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projections.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let writer = std::sync::Mutex::new(Some(Connection::open(&path).unwrap()));
    conn.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
        if let rusqlite::hooks::AuthAction::Read {
            table_name: "visits",
            ..
        } = ctx.action
            && let Some(w) = writer.lock().unwrap().take()
        {
            w.execute(
                "INSERT INTO visits (id, dossier_id, at, staff, purchased, office, reason)
                 VALUES ('v1', 'd1', '2026-10-02 10:00:00', '王医生', 1, '44', NULL)",
                [],
            )
            .unwrap();
        }
        rusqlite::hooks::Authorization::Allow
    }))
    .unwrap();
    let (from, to) = (day(0), day(9));
    let first = report_rows(&conn, None, from, to).unwrap();
    assert!(
        first.visits.is_empty(),
        "a visit committed after the report began is not in it: {:?}",
        first.visits
    );
    conn.authorizer(None::<fn(rusqlite::hooks::AuthContext<'_>) -> rusqlite::hooks::Authorization>)
        .unwrap();
    let next = report_rows(&conn, None, from, to).unwrap();
    assert_eq!(next.visits.len(), 1, "the next report has it");
}

/// The tallies a reader counts beside the writer ([`restore_indexes_beside`])
/// are those the writer counts alone ([`restore_indexes`], and a store
/// whose triggers never went): with a reader on the store (here the writer
/// waits, before its R*Tree, until the reader has begun counting, so the
/// reader counts at least one), with no reader, and with a reader whose
/// queries fail (a connection to another, empty database).
#[test]
fn tallies_counted_beside_the_writer_are_those_it_counts_alone() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dossiers = dossiers_with_records(60);
    let plain = Connection::open_in_memory().unwrap();
    plain.execute_batch(SCHEMA).unwrap();
    for (v, slots) in &dossiers {
        project_new_dossier(&plain, v, slots).unwrap();
    }
    let kept = [
        "slot_tallies",
        "overdue_tallies",
        "followup_tallies",
        "category_tallies",
        "slot_spans",
    ];
    for tally in kept {
        assert!(
            !all_rows(&plain, tally).is_empty(),
            "{tally} has rows to count"
        );
    }
    for reader in ["on the store", "none", "failing"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(INDEXES_ASIDE).unwrap();
        let aside = set_indexes_aside(&conn).unwrap();
        for (v, slots) in &dossiers {
            project_new_dossier(&conn, v, slots).unwrap();
        }
        assert!(all_rows(&conn, "slot_tallies").is_empty());
        // Statements the reader prepared that read a table.
        let reads = Arc::new(AtomicUsize::new(0));
        // The tables the writer emptied (to fill them, or to write the
        // reader's rows): each once.
        let emptied = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        {
            let (reads, emptied) = (reads.clone(), emptied.clone());
            let mut waited = reader != "on the store";
            conn.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
                if let rusqlite::hooks::AuthAction::Delete { table_name } = ctx.action {
                    emptied.lock().unwrap().push(table_name.to_string());
                    if table_name == "slot_spans" && !waited {
                        waited = true;
                        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
                        while reads.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < until
                        {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                    }
                }
                rusqlite::hooks::Authorization::Allow
            }))
            .unwrap();
        }
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let reader_reads = reads.clone();
        let created = restore_indexes_beside(&conn, move || match reader {
            "on the store" => {
                let r = Connection::open(&path).unwrap();
                r.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
                    if let rusqlite::hooks::AuthAction::Read { .. } = ctx.action {
                        reader_reads.fetch_add(1, Ordering::SeqCst);
                    }
                    rusqlite::hooks::Authorization::Allow
                }))
                .unwrap();
                Some(r)
            }
            "failing" => Some(Connection::open_in_memory().unwrap()),
            _ => None,
        })
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        conn.authorizer(
            None::<fn(rusqlite::hooks::AuthContext<'_>) -> rusqlite::hooks::Authorization>,
        )
        .unwrap();
        assert_eq!(created, aside, "{reader}");
        let mut emptied = emptied.lock().unwrap().clone();
        emptied.retain(|t| kept.contains(&t.as_str()));
        emptied.sort();
        let mut each_once = kept.map(String::from).to_vec();
        each_once.sort();
        assert_eq!(emptied, each_once, "each filled once, reader {reader}");
        if reader == "on the store" {
            assert!(reads.load(Ordering::SeqCst) > 0, "the reader counted");
        }
        for tally in kept {
            assert_eq!(
                all_rows(&conn, tally),
                all_rows(&plain, tally),
                "{tally}, reader {reader}"
            );
        }
        assert_eq!(dump(&conn).unwrap(), dump(&plain).unwrap());
        assert_eq!(index_schema(&conn), index_schema(&plain));
        assert_eq!(trigger_schema(&conn), trigger_schema(&plain));
        // Nothing left aside.
        assert_eq!(restore_indexes(&conn).unwrap(), 0, "{reader}");
    }
}
