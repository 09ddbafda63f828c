//! Hostile input, generated: random and structure-aware garbage through
//! every decoder and every handler of the server, in process (so many
//! inputs fit in a test). Each input must give an answer, never a panic;
//! every refused push stores nothing; the server keeps working afterwards.
//!
//! `KEQING_FUZZ_INPUTS=N` sets how many (default 20 000; `scripts/fuzz.sh`
//! runs 1 000 000 in a release build).

use automerge::ActorId;
use chrono::NaiveDate;
use keqing_demo::Rng;
use keqing_proto::{ReportsHandler, SyncHandler};
use keqing_server::hub::{Hub, token_hash};
use keqing_server::reports::ReportDesk;
use keqing_server::store::{SqliteStore, Store};
use keqing_shared::dossier::{Dossier, NewChange};
use keqing_shared::report::Scope;
use keqing_shared::sync::{ChangeEnvelope, DocHeads, SyncErrorKind, limits};
use std::collections::BTreeMap;
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

/// One generated push: its changes, and whether it may legitimately be
/// accepted (only well-formed changes of the device's own office and actor).
fn generate(rng: &mut Rng, m: &Material) -> (Vec<ChangeEnvelope>, bool, u64) {
    let (id, first, second) = rng.pick(&m.own);
    let id = id.as_str();
    let env = |doc: &str, bytes: Vec<u8>| ChangeEnvelope {
        doc_id: doc.to_string(),
        bytes,
    };
    let case = rng.below(10);
    let (changes, may_accept) = match case {
        // Random bytes as a change.
        0 => (vec![env(id, random_bytes(rng, 600))], false),
        // A real change with bytes flipped.
        1 => {
            let mut b = first.bytes.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= (rng.next_u64() as u8) | 1;
            }
            (vec![env(id, b)], false)
        }
        // A real change cut short.
        2 => {
            let n = rng.below(first.bytes.len() as u64) as usize;
            (vec![env(id, first.bytes[..n].to_vec())], false)
        }
        // Another device's actor (forged).
        3 => {
            let (fid, forged) = rng.pick(&m.forged);
            (vec![env(fid, forged.bytes.clone())], false)
        }
        // Another office's dossier.
        4 => {
            let (tid, theirs) = rng.pick(&m.foreign);
            (vec![env(tid, theirs.bytes.clone())], false)
        }
        // A bad or lying document id.
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
                ])
                .to_string();
            (vec![env(&doc, first.bytes.clone())], false)
        }
        // A new dossier without its first change (missing dependency).
        6 => (vec![env(id, second.bytes.clone())], false),
        // Too many changes in one push.
        7 => (
            (0..limits::MAX_CHANGES_PER_PUSH + 1 + rng.below(10) as usize)
                .map(|_| env(id, Vec::new()))
                .collect(),
            false,
        ),
        // A change over the size limit.
        8 => (
            vec![env(id, vec![0u8; limits::MAX_CHANGE_BYTES + 1])],
            false,
        ),
        // Well-formed: the device's own new dossier (sometimes).
        _ => (
            vec![env(id, first.bytes.clone()), env(id, second.bytes.clone())],
            true,
        ),
    };
    (changes, may_accept, case)
}

#[test]
fn generated_hostile_input_never_panics_and_refused_input_stores_nothing() {
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
    let mut rng = Rng(0x5EED);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let started = std::time::Instant::now();
    for i in 0..inputs {
        let kind = match rng.below(8) {
            // Raw bytes into every wire decoder.
            0 => {
                let b = random_bytes(&mut rng, 300);
                keqing_proto::decode_untrusted(&b);
                "decode".to_string()
            }
            // Pushes, mostly hostile.
            1..=4 => {
                let (changes, may_accept, case) = generate(&mut rng, &material);
                let token = if rng.below(20) == 0 {
                    "forged-token"
                } else {
                    own_token
                };
                let before = check.counts().unwrap().changes;
                let r = rt.block_on(hub.push(token.into(), changes));
                let after = check.counts().unwrap().changes;
                match &r {
                    Err(e) => assert_eq!(before, after, "input {i}: refused ({e}) yet stored"),
                    // A hostile push may only be answered "already have it"
                    // (its bytes equal a change accepted before): nothing new.
                    Ok(ack) if !(may_accept && token == own_token) => assert!(
                        ack.accepted == 0 && before == after,
                        "input {i} (case {case}): hostile push accepted: {ack:?}"
                    ),
                    Ok(_) => {}
                }
                match r {
                    Ok(_) => "push accepted".into(),
                    Err(e) => format!("push {:?}", e.kind),
                }
            }
            // Pulls with any cursor, epoch and batch size.
            5 => {
                let token = *rng.pick(&[own_token, hq_token, "", "nobody"]);
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
                    Ok::<_, keqing_shared::sync::SyncError>(())
                });
                match r {
                    Ok(()) => "pull ok".into(),
                    Err(e) => format!("pull {:?}", e.kind),
                }
            }
            // Repairs with made-up documents and heads.
            6 => {
                let docs = (0..rng.below(5))
                    .map(|_| DocHeads {
                        doc_id: String::from_utf8_lossy(&random_bytes(&mut rng, 50)).into_owned(),
                        heads: (0..rng.below(3))
                            .map(|_| [rng.next_u64() as u8; 32])
                            .collect(),
                    })
                    .collect();
                match rt.block_on(hub.repair(own_token.into(), docs)) {
                    Ok(_) => "repair ok".into(),
                    Err(e) => format!("repair {:?}", e.kind),
                }
            }
            // Reports: any scope and range, any device.
            _ => {
                let token = *rng.pick(&[own_token, hq_token, "x"]);
                let scope = match rng.below(3) {
                    0 => Scope::National,
                    1 => Scope::Office(rng.pick(&["44", "11", "99", "", "广东"]).to_string()),
                    _ => Scope::Office(
                        String::from_utf8_lossy(&random_bytes(&mut rng, 8)).into_owned(),
                    ),
                };
                let day = |r: &mut Rng| {
                    NaiveDate::from_num_days_from_ce_opt(700_000 + r.below(80_000) as i32).unwrap()
                };
                let (from, to) = (day(&mut rng), day(&mut rng));
                match rt.block_on(desk.report(token.into(), scope, from, to)) {
                    Ok(_) => "report ok".into(),
                    Err(e) => format!("report {:?}", e.kind),
                }
            }
        };
        *outcomes.entry(kind).or_default() += 1;
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
        "fuzz: {inputs} inputs in {:.1} s: {outcomes:?}",
        started.elapsed().as_secs_f64()
    );
    for kind in [
        SyncErrorKind::InvalidArgument,
        SyncErrorKind::PermissionDenied,
        SyncErrorKind::ResourceExhausted,
        SyncErrorKind::Unauthenticated,
    ] {
        assert!(
            outcomes.contains_key(&format!("push {kind:?}")),
            "the generator reaches {kind:?}: {outcomes:?}"
        );
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
    // A flood: after the burst, requests are refused until the bucket refills.
    let mut limited = 0;
    for _ in 0..(limits::REQUEST_BURST + 100) {
        if let Err(e) = rt.block_on(hub.push("tok".into(), Vec::new())) {
            assert_eq!(e.kind, SyncErrorKind::ResourceExhausted);
            limited += 1;
        }
    }
    assert!(limited >= 50, "{limited} of the flood limited");
    std::thread::sleep(std::time::Duration::from_millis(200));
    rt.block_on(hub.push("tok".into(), Vec::new()))
        .expect("the limit refills");
}

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.below(max)).map(|_| rng.next_u64() as u8).collect()
}
