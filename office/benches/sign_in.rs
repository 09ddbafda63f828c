//! What a sign-in costs: prints figures, never fails on time.
//!
//! Argon2id with the parameters of `keqing_office::accounts` (19 MiB,
//! 2 passes, 1 lane), through `Desk::sign_in` as the workstation calls it:
//! a right password, a wrong one, and a name that does not exist (checked
//! against a decoy hash, so it should cost what a wrong password costs:
//! the ratio near 1 is the figure that matters). The baseline, in the same
//! run, is what every workstation request does besides: reading who has an
//! account (`Desk::has_accounts`).
//!
//! KEQING_BENCH_SIGN_INS (default 40) sign-ins of each kind.

/// The allocator of the `keqing` binary, so the figures are those of what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use keqing_office::desk::Desk;
use keqing_shared::staff::Role;
use std::time::Instant;

fn p50_p99(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |p: f64| xs[((xs.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn timed(n: u64, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn main() {
    let n: u64 = std::env::var("KEQING_BENCH_SIGN_INS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut desk = Desk::init(tmp.path(), "44", "前台1").expect("replica");
    for (name, role) in [("李娜", Role::Supervisor), ("王芳", Role::Consultant)] {
        desk.add_staff_account(name, role, Some("心脑通 2026-春"))
            .expect("staff");
    }
    let t = Instant::now();
    let hash = keqing_host::passwords::hash_password("心脑通 2026-春").expect("hash");
    let hashing = t.elapsed().as_secs_f64() * 1000.0;
    let baseline = p50_p99(timed(n, || {
        assert!(desk.has_accounts().expect("accounts"));
    }));
    let right = p50_p99(timed(n, || {
        desk.sign_in("李娜", "心脑通 2026-春").expect("signed in");
    }));
    let wrong = p50_p99(timed(n, || {
        assert!(desk.sign_in("李娜", "心脑通 2026-夏").is_err());
    }));
    let unknown = p50_p99(timed(n, || {
        assert!(desk.sign_in("无名", "心脑通 2026-春").is_err());
    }));
    println!(
        "sign-in (Argon2id m={} KiB t={} p={}; {} chars of hash): {n} of each",
        keqing_host::passwords::MEMORY_KIB,
        keqing_host::passwords::PASSES,
        keqing_host::passwords::LANES,
        hash.len()
    );
    println!("  hashing a new password      {hashing:8.1} ms");
    println!(
        "  baseline: who has accounts  p50 {:6.2} ms  p99 {:6.2} ms",
        baseline.0, baseline.1
    );
    println!(
        "  right password              p50 {:6.1} ms  p99 {:6.1} ms  ({:.0}x baseline)",
        right.0,
        right.1,
        right.0 / baseline.0
    );
    println!(
        "  wrong password              p50 {:6.1} ms  p99 {:6.1} ms",
        wrong.0, wrong.1
    );
    println!(
        "  unknown name (decoy)        p50 {:6.1} ms  p99 {:6.1} ms  (unknown / wrong {:.2})",
        unknown.0,
        unknown.1,
        unknown.0 / wrong.0
    );
}
