//! What the server benchmarks share: reading a process's memory from /proc.

/// A memory figure of process `pid` from /proc/PID/status, in MB (e.g.
/// `VmRSS:` resident now, `VmHWM:` resident at its peak); NaN if unknown.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs an administration command (e.g. `keqing-server device add`),
/// insisting on success; the last line it printed (a token, say).
pub fn last_line_of(command: &mut std::process::Command) -> String {
    let out = command.output().expect("run the command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}
