//! The layers point one way, as cargo resolves them: the office library
//! never links the server, the domain does no IO, only the proto crate
//! knows prost. Read from `cargo metadata` (the real dependency graph), so
//! a dependency added against the rule fails here.

use std::collections::{BTreeMap, BTreeSet};

/// `cargo metadata` of the workspace.
fn metadata() -> serde_json::Value {
    // This machine's target only: the others' dependencies need not be
    // downloaded (the machines this runs on reach no network).
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-vV")
            .output()
            .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

/// Workspace package name → its direct dependencies (normal and build,
/// not dev), by package name, as resolved.
fn graph(meta: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = name_of[node["id"].as_str().unwrap()].to_string();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].as_str() != Some("dev"))
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].to_string())
            .collect();
        graph.insert(name, deps);
    }
    graph
}

/// Every package `root` links, directly or not.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn layers_point_one_way() {
    let meta = metadata();
    let graph = graph(&meta);
    let office = closure(&graph, "keqing-office");
    for forbidden in ["keqing-server", "keqing-demo", "keqing"] {
        assert!(
            !office.contains(forbidden),
            "the office library links {forbidden}"
        );
    }
    assert!(
        !graph["keqing"].contains("keqing-server"),
        "the keqing binary is built on the office library and the demo, not the server"
    );
    // The domain does no IO: it asks for no database, network or runtime
    // (read from its manifest: features are unified across the workspace,
    // so what it links also depends on its neighbours).
    let shared = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "keqing-shared")
        .expect("keqing-shared");
    for dep in shared["dependencies"].as_array().unwrap() {
        if dep["kind"].as_str() == Some("dev") {
            continue;
        }
        let name = dep["name"].as_str().unwrap();
        for io in [
            "tokio", "rusqlite", "tonic", "axum", "hyper", "libc", "reqwest",
        ] {
            assert_ne!(name, io, "keqing-shared depends on {io}");
        }
        let features: Vec<&str> = dep["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        assert!(
            !features.contains(&"axum"),
            "keqing-shared asks {name} for its axum feature"
        );
    }
    // The projections write SQL on a connection their caller owns.
    let projection = closure(&graph, "keqing-projection");
    for io in ["tokio", "tonic", "axum"] {
        assert!(!projection.contains(io), "keqing-projection links {io}");
    }
    // Only the proto crate knows prost: no other package of ours names it.
    for (package, deps) in &graph {
        if package.starts_with("keqing") && package != "keqing-proto" {
            for p in ["prost", "tonic-prost", "prost-types"] {
                assert!(!deps.contains(p), "{package} depends on {p} directly");
            }
        }
    }
}
