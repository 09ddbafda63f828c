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
