//! What the server benchmarks share: reading memory figures from /proc.

/// A memory figure of process `pid` from /proc/PID/status, in MB (e.g.
/// `VmRSS:` resident now, `VmHWM:` resident at its peak); NaN if unknown.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    proc_file_mb(&format!("/proc/{pid}/status"), field)
}

/// A `Field:   N kB` line of a /proc file (a process's status,
/// /proc/meminfo), in MB; NaN if the file or the field is not there.
pub fn proc_file_mb(path: &str, field: &str) -> f64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
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
