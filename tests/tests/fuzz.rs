//! Hostile input, generated: random and structure-aware garbage through
//! every decoder and every handler of the server, in process (so many
//! inputs fit in a test). Each input must get the answer its class calls
//! for (accepted, a duplicate, served, or refused with one error kind),
//! never a panic; what decodes survives a round trip; every refused push
//! stores nothing; the server keeps working afterwards.
//!
//! `KEQING_FUZZ_INPUTS=N` sets how many (default 20 000; `scripts/fuzz.sh`
//! runs 1 000 000 in a release build).

use automerge::ActorId;
use chrono::NaiveDate;
use keqing_demo::Rng;
use keqing_proto::{ReportsHandler, SyncHandler};
use keqing_server::hub::{Hub, token_hash};
use keqing_server::reports::{MAX_REPORT_DAYS, ReportDesk};
use keqing_server::store::{SqliteStore, Store};
use keqing_shared::dossier::{Dossier, NewChange};
use keqing_shared::report::Scope;
use keqing_shared::sync::{ChangeEnvelope, DocHeads, SyncError, SyncErrorKind, limits};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

fn t(s: &str) -> chrono::NaiveDateTime {
    keqing_shared::when::parse_datetime(s).unwrap()
}

/// Valid material to mutate: a dossier's first two changes.
fn dossier_changes(id: &str, office: &str, actor: &ActorId) -> (NewChange, NewChange) {
    let (mut d, first) =
        Dossier::create(id, office, t("2026-11-20T09:00"), actor.clone(), 1).unwrap();
    let second = d
        .edit(2, |tx| {
            tx.add_phone("13800138000")?;
            Ok(())
        })
        .unwrap()
        .unwrap();
    (first, second)
}

/// Real changes to mutate, made once (automerge work is the slow part).
struct Material {
    /// (id, first, second) of the device's own office and actor.
    own: Vec<(String, NewChange, NewChange)>,
    /// Another device's actor.
    forged: Vec<(String, NewChange)>,
    /// Another office.
    foreign: Vec<(String, NewChange)>,
}

impl Material {
    fn new(own: &ActorId, other: &ActorId) -> Material {
        let id = || uuid::Uuid::now_v7().to_string();
        Material {
            own: (0..32)
                .map(|_| {
                    let i = id();
                    let (a, b) = dossier_changes(&i, "44", own);
                    (i, a, b)
                })
                .collect(),
            forged: (0..8)
                .map(|_| {
                    let i = id();
                    (i.clone(), dossier_changes(&i, "44", other).0)
                })
                .collect(),
            foreign: (0..8)
                .map(|_| {
                    let i = id();
                    (i.clone(), dossier_changes(&i, "11", own).0)
                })
                .collect(),
        }
    }
}

/// What an input must get: the oracle is the input's class, worked out
/// from the protocol's rules, not from what the server answered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Stored this many new changes.
    Accepted(u32),
    /// Answered "already have it" (its bytes equal changes accepted
    /// before): nothing new.
    Duplicate,
    /// Served (a pull, a repair, a report).
    Served,
    Refused(SyncErrorKind),
}

impl Outcome {
    fn of<T>(r: &Result<T, SyncError>) -> Outcome {
        match r {
            Ok(_) => Outcome::Served,
            Err(e) => Outcome::Refused(e.kind),
        }
    }
}

const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// The protocol's document id: 1 to 64 ASCII letters, digits or '-'.
fn valid_doc_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// One generated push (by the device's own token): its changes and what
/// it must get. `stored` holds the device's dossiers accepted so far.
fn generate(
    rng: &mut Rng,
    m: &Material,
    stored: &HashSet<String>,
) -> (Vec<ChangeEnvelope>, Outcome, u64) {
    use Outcome::*;
    use SyncErrorKind::*;
    let (id, first, second) = rng.pick(&m.own);
    let known = stored.contains(id);
    let id = id.as_str();
    let env = |doc: &str, bytes: Vec<u8>| ChangeEnvelope {
        doc_id: doc.to_string(),
        bytes,
    };
    let case = rng.below(10);
    let (changes, expected) = match case {
        // Random bytes as a change: not an automerge change.
        0 => (
            vec![env(id, random_bytes(rng, 600))],
            Refused(InvalidArgument),
        ),
        // A real change with bytes flipped (at distinct places, so the
        // flips never cancel out): damaged, or, when the flips made it
        // claim to be compressed, refused before it is inflated.
        1 => {
            let mut b = first.bytes.clone();
            let mut at = HashSet::new();
            for _ in 0..=rng.below(4) {
                at.insert(rng.below(b.len() as u64) as usize);
            }
            for &i in &at {
                b[i] ^= (rng.next_u64() as u8) | 1;
            }
            let compressed = b.starts_with(&AUTOMERGE_MAGIC) && b.get(8) == Some(&2);
            let expected = if compressed {
                Refused(ResourceExhausted)
            } else {
                Refused(InvalidArgument)
            };
            (vec![env(id, b)], expected)
        }
        // A real change cut short.
        2 => {
            let n = rng.below(first.bytes.len() as u64) as usize;
            (
                vec![env(id, first.bytes[..n].to_vec())],
                Refused(InvalidArgument),
            )
        }
        // Another device's actor (forged).
        3 => {
            let (fid, forged) = rng.pick(&m.forged);
            (
                vec![env(fid, forged.bytes.clone())],
                Refused(PermissionDenied),
            )
        }
        // Another office's dossier.
        4 => {
            let (tid, theirs) = rng.pick(&m.foreign);
            (
                vec![env(tid, theirs.bytes.clone())],
                Refused(PermissionDenied),
            )
        }
        // A bad or lying document id: malformed, a roster of no office,
        // a roster not starting from its genesis, or a dossier's change
        // under an id it does not have. A change is known by its hash
        // before its document is looked at: once stored, the same bytes
        // under a well-formed id are a duplicate (nothing stored).
        5 => {
            let doc = rng
                .pick(&[
                    "",
                    "../../etc/passwd",
                    "roster-99",
                    "roster-44",
                    "x y",
                    "档案",
                    &"a".repeat(100),
                    "a-dossier-by-another-name",
                ])
                .to_string();
            let expected = if known && valid_doc_id(&doc) {
                Duplicate
            } else {
                Refused(InvalidArgument)
            };
            (vec![env(&doc, first.bytes.clone())], expected)
        }
        // A dossier's second change alone: a duplicate once the dossier
        // is stored, else a new document without its creation.
        6 => {
            let expected = if known {
                Duplicate
            } else {
                Refused(InvalidArgument)
            };
            (vec![env(id, second.bytes.clone())], expected)
        }
        // Too many changes in one push.
        7 => (
            (0..limits::MAX_CHANGES_PER_PUSH + 1 + rng.below(10) as usize)
                .map(|_| env(id, Vec::new()))
                .collect(),
            Refused(ResourceExhausted),
        ),
        // A change over the size limit.
        8 => (
            vec![env(id, vec![0u8; limits::MAX_CHANGE_BYTES + 1])],
            Refused(ResourceExhausted),
        ),
        // Well-formed: the device's own new dossier.
        _ => {
            let expected = if known { Duplicate } else { Accepted(2) };
            (
                vec![env(id, first.bytes.clone()), env(id, second.bytes.clone())],
                expected,
            )
        }
    };
    (changes, expected, case)
}

#[test]
fn generated_hostile_input_gets_the_answer_its_class_calls_for_and_refused_input_stores_nothing() {
    use Outcome::*;
    use SyncErrorKind::*;
    let inputs: u64 = keqing_tests::env_number("KEQING_FUZZ_INPUTS", 20_000);
    let tmp = keqing_tests::scratch_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(tmp.path()).unwrap());
    let own_token = "own-device-token";
    let hq_token = "hq-device-token";
    for (id, office, token) in [
        ("dev-gd", Some("44"), own_token),
        ("dev-hq", None, hq_token),
    ] {
        store
            .add_device(
                id,
                id,
                office,
                &token_hash(token),
                "2026-11-20T00:00:00",
                "fuzz",
            )
            .unwrap();
    }
    let check = store.clone();
    // No request limit here: every input must reach the checks it aims at.
    let hub = Hub::new(store.clone(), Arc::new(tokio::sync::Notify::new()))
        .unwrap()
        .with_rate_limit(u32::MAX, u32::MAX);
    let desk = ReportDesk::new(
        store,
        keqing_server::hub::Admission::with_rate_limit(Default::default(), u32::MAX, u32::MAX),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let own = ActorId::random();
    let other = ActorId::random();
    rt.block_on(hub.enroll(own_token.into(), own.to_bytes().to_vec()))
        .unwrap();
    let material = Material::new(&own, &other);
    let mut stored: HashSet<String> = HashSet::new();
    let mut rng = Rng(0x5EED);
    // (class of input, outcome) → how many.
    let mut outcomes: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut decoded = 0usize;
    let started = std::time::Instant::now();
    for i in 0..inputs {
        let (class, expected, got) = match rng.below(8) {
            // Raw bytes into every wire decoder: what decodes must survive
            // a round trip.
            0 => {
                let b = if rng.below(2) == 0 {
                    random_bytes(&mut rng, 300)
                } else {
                    random_protobuf(&mut rng, 3)
                };
                match keqing_proto::decode_untrusted(&b) {
                    Ok(n) => decoded += n,
                    Err(e) => panic!("input {i}: {e} (bytes {b:02x?})"),
                }
                continue;
            }
            // Pushes, mostly hostile.
            1..=4 => {
                let (changes, mut expected, case) = generate(&mut rng, &material, &stored);
                let token = if rng.below(20) == 0 {
                    expected = Refused(Unauthenticated);
                    "forged-token"
                } else {
                    own_token
                };
                let doc = changes.first().map(|c| c.doc_id.clone());
                let before = check.counts().unwrap().changes;
                let r = rt.block_on(hub.push(token.into(), changes));
                let after = check.counts().unwrap().changes;
                let got = match &r {
                    Ok(ack) if ack.accepted > 0 => Accepted(ack.accepted),
                    Ok(_) => Duplicate,
                    Err(e) => Refused(e.kind),
                };
                let new = after - before;
                match got {
                    Accepted(n) => assert_eq!(new, u64::from(n), "input {i}: stored {new}"),
                    _ => assert_eq!(new, 0, "input {i} ({got:?}) stored {new} changes"),
                }
                if let (Accepted(_), Some(doc)) = (got, doc) {
                    stored.insert(doc);
                }
                (format!("push case {case}"), expected, got)
            }
            // Pulls with any cursor, epoch and batch size: served to an
            // enrolled device (an unknown epoch starts over), refused to
            // anyone else.
            5 => {
                let token = *rng.pick(&[own_token, hq_token, "", "nobody"]);
                let expected = if token == own_token || token == hq_token {
                    Served
                } else {
                    Refused(Unauthenticated)
                };
                let epoch = String::from_utf8_lossy(&random_bytes(&mut rng, 40)).into_owned();
                let r = rt.block_on(async {
                    let mut rx = hub
                        .pull(token.into(), rng.next_u64(), epoch, rng.next_u64() as u32)
                        .await?;
                    while let Some(b) = rx.recv().await {
                        if b?.done {
                            break;
                        }
                    }
                    Ok::<_, SyncError>(())
                });
                ("pull".to_string(), expected, Outcome::of(&r))
            }
            // Repairs with made-up and real documents and heads: a bad id
            // is refused before the caller is looked at.
            6 => {
                let docs: Vec<DocHeads> = (0..rng.below(5))
                    .map(|_| DocHeads {
                        doc_id: if rng.below(2) == 0 {
                            rng.pick(&material.own).0.clone()
                        } else {
                            String::from_utf8_lossy(&random_bytes(&mut rng, 50)).into_owned()
                        },
                        heads: (0..rng.below(3))
                            .map(|_| [rng.next_u64() as u8; 32])
                            .collect(),
                    })
                    .collect();
                let token = if rng.below(10) == 0 {
                    "nobody"
                } else {
                    own_token
                };
                let expected = if !docs.iter().all(|d| valid_doc_id(&d.doc_id)) {
                    Refused(InvalidArgument)
                } else if token != own_token {
                    Refused(Unauthenticated)
                } else {
                    Served
                };
                let r = rt.block_on(hub.repair(token.into(), docs));
                ("repair".to_string(), expected, Outcome::of(&r))
            }
            // Reports: any scope and range, any device. The request is
            // checked first, then the caller, then the caller's scope.
            _ => {
                let token = *rng.pick(&[own_token, hq_token, "x"]);
                let offices = ["44", "11", "99", "", "广东"];
                let scope = match rng.below(3) {
                    0 => Scope::National,
                    1 => Scope::Office(rng.pick(&offices).to_string()),
                    _ => Scope::Office(
                        String::from_utf8_lossy(&random_bytes(&mut rng, 8)).into_owned(),
                    ),
                };
                let from = NaiveDate::from_num_days_from_ce_opt(700_000 + rng.below(80_000) as i32)
                    .unwrap();
                let to = if rng.below(4) == 0 {
                    NaiveDate::from_num_days_from_ce_opt(700_000 + rng.below(80_000) as i32)
                        .unwrap()
                } else {
                    from + chrono::Days::new(rng.below(MAX_REPORT_DAYS as u64 + 30))
                };
                let real_office = match &scope {
                    Scope::National => true,
                    Scope::Office(o) => keqing_shared::office::office(o).is_ok(),
                };
                let expected =
                    if to < from || (to - from).num_days() >= MAX_REPORT_DAYS || !real_office {
                        Refused(InvalidArgument)
                    } else if token == "x" {
                        Refused(Unauthenticated)
                    } else if token == own_token && scope.office() != Some("44") {
                        Refused(PermissionDenied)
                    } else {
                        Served
                    };
                let r = rt.block_on(desk.report(token.into(), scope, from, to));
                ("report".to_string(), expected, Outcome::of(&r))
            }
        };
        assert_eq!(got, expected, "input {i} ({class})");
        *outcomes.entry((class, format!("{got:?}"))).or_default() += 1;
    }
    // Still serving: a good push goes through.
    let id = uuid::Uuid::now_v7().to_string();
    let (first, _) = dossier_changes(&id, "44", &own);
    let ack = rt
        .block_on(hub.push(
            own_token.into(),
            vec![ChangeEnvelope {
                doc_id: id,
                bytes: first.bytes,
            }],
        ))
        .unwrap();
    assert_eq!(ack.accepted, 1);
    println!(
        "fuzz: {inputs} inputs in {:.1} s; {decoded} decodings round-tripped; {outcomes:?}",
        started.elapsed().as_secs_f64()
    );
    if inputs >= 1_000 {
        let reached = |class: &str, outcome: Outcome| {
            outcomes.contains_key(&(class.to_string(), format!("{outcome:?}")))
        };
        assert!(
            outcomes
                .keys()
                .any(|(c, o)| c == "push case 9" && o.starts_with("Accepted")),
            "a good push was accepted during the run: {outcomes:?}"
        );
        for kind in [
            InvalidArgument,
            PermissionDenied,
            ResourceExhausted,
            Unauthenticated,
        ] {
            assert!(
                outcomes
                    .keys()
                    .any(|(c, o)| c.starts_with("push") && *o == format!("{:?}", Refused(kind))),
                "the generator reaches {kind:?}: {outcomes:?}"
            );
        }
        for (class, outcome) in [
            ("pull", Served),
            ("pull", Refused(Unauthenticated)),
            ("repair", Served),
            ("repair", Refused(InvalidArgument)),
            ("repair", Refused(Unauthenticated)),
            ("report", Served),
            ("report", Refused(InvalidArgument)),
            ("report", Refused(PermissionDenied)),
            ("report", Refused(Unauthenticated)),
            ("push case 6", Duplicate),
            ("push case 9", Duplicate),
        ] {
            assert!(
                reached(class, outcome),
                "{class} reached {outcome:?}: {outcomes:?}"
            );
        }
        assert!(decoded > 0, "some random bytes decoded as a message");
    }
}

/// A device in a tight loop is slowed down (RESOURCE_EXHAUSTED, nothing
/// done), and a compressed change — a possible compression bomb — is
/// refused before it is inflated.
#[test]
fn a_request_flood_is_limited_and_compressed_changes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(tmp.path()).unwrap());
    store
        .add_device(
            "d",
            "d",
            Some("44"),
            &token_hash("tok"),
            "2026-11-20T00:00:00",
            "test",
        )
        .unwrap();
    let check = store.clone();
    let hub = Hub::new(store, Arc::new(tokio::sync::Notify::new())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let own = ActorId::random();
    rt.block_on(hub.enroll("tok".into(), own.to_bytes().to_vec()))
        .unwrap();
    // A change big enough that automerge compresses it.
    let id = uuid::Uuid::now_v7().to_string();
    let (mut d, first) = Dossier::create(&id, "44", t("2026-11-20T09:00"), own.clone(), 1).unwrap();
    let big = d
        .edit(2, |tx| {
            tx.update_patient(&keqing_shared::dossier::PatientUpdate {
                notes: Some("心".repeat(20_000)),
                ..Default::default()
            })
        })
        .unwrap()
        .unwrap();
    let mut compressed = automerge::Change::from_bytes(big.bytes.clone()).unwrap();
    let packed = compressed.bytes().to_vec();
    assert_eq!(packed.get(8), Some(&2), "automerge compressed it");
    assert!(packed.len() < big.bytes.len());
    let r = rt.block_on(hub.push(
        "tok".into(),
        vec![
            ChangeEnvelope {
                doc_id: id.clone(),
                bytes: first.bytes.clone(),
            },
            ChangeEnvelope {
                doc_id: id.clone(),
                bytes: packed,
            },
        ],
    ));
    assert_eq!(r.unwrap_err().kind, SyncErrorKind::ResourceExhausted);
    assert_eq!(
        check.counts().unwrap().changes,
        0,
        "the whole push is refused"
    );
    // The same change uncompressed is fine.
    let ok = rt
        .block_on(hub.push(
            "tok".into(),
            vec![
                ChangeEnvelope {
                    doc_id: id.clone(),
                    bytes: first.bytes,
                },
                ChangeEnvelope {
                    doc_id: id,
                    bytes: big.bytes,
                },
            ],
        ))
        .unwrap();
    assert_eq!(ok.accepted, 2);
    // A flood: after the burst, requests are refused until the bucket
    // refills. Whatever the flood takes on a busy machine, no more get
    // through than the burst and what the rate refilled meanwhile (the
    // bound comes from the time measured, not a window assumed).
    let (rate, burst) = (5u32, 20u32);
    let hub = hub.with_rate_limit(rate, burst);
    let flood = 200u32;
    let started = std::time::Instant::now();
    let mut served = 0u32;
    for _ in 0..flood {
        match rt.block_on(hub.push("tok".into(), Vec::new())) {
            Ok(_) => served += 1,
            Err(e) => assert_eq!(e.kind, SyncErrorKind::ResourceExhausted, "{e}"),
        }
    }
    let refilled = (started.elapsed().as_secs_f64() * f64::from(rate)).ceil() as u32;
    assert!(
        served >= burst && served <= burst + refilled,
        "{served} of {flood} served; burst {burst}, {refilled} refilled meanwhile"
    );
    // The bucket refills: within a few seconds a request goes through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.block_on(hub.push("tok".into(), Vec::new())).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the limit never refilled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.below(max)).map(|_| rng.next_u64() as u8).collect()
}

/// Bytes in protobuf's wire format (fields of every wire type, strings and
/// nested messages), which the decoders accept far more often than random
/// bytes: the conversions behind them get exercised.
fn random_protobuf(rng: &mut Rng, depth: u32) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for _ in 0..rng.below(6) {
        let field = 1 + rng.below(16);
        match rng.below(4) {
            0 => {
                varint(&mut out, field << 3);
                let v = if rng.below(2) == 0 {
                    rng.below(100)
                } else {
                    rng.next_u64()
                };
                varint(&mut out, v);
            }
            1 => {
                varint(&mut out, (field << 3) | 2);
                let body = match rng.below(3) {
                    0 if depth > 0 => random_protobuf(rng, depth - 1),
                    1 => rng
                        .pick(&["44", "2026-11-20", "roster-44", "电视", ""])
                        .as_bytes()
                        .to_vec(),
                    _ => random_bytes(rng, 40),
                };
                varint(&mut out, body.len() as u64);
                out.extend(body);
            }
            2 => {
                varint(&mut out, (field << 3) | 5);
                out.extend((rng.next_u64() as u32).to_le_bytes());
            }
            _ => {
                varint(&mut out, (field << 3) | 1);
                out.extend(rng.next_u64().to_le_bytes());
            }
        }
    }
    out
}
