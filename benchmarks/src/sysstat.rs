//! CPU time and peak resident memory of a process, from `/proc`.

/// Clock ticks per second of `/proc/<pid>/stat` times (Linux's USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds used so far by `pid` (`"self"` for this process).
#[must_use]
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak resident memory of `pid` in KiB.
#[must_use]
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident memory of `pid` in KiB.
#[must_use]
pub fn rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        assert!(super::cpu_seconds("self").is_some());
        assert!(super::peak_rss_kib("self").unwrap() > 0);
        assert!(super::rss_kib("self").unwrap() > 0);
    }
}
