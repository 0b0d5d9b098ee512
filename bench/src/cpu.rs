//! CPU time used by the processes of a measurement, read from `/proc` (Linux): the load
//! generator (this process), the server, and Postgres (every process named `postgres`
//! on the machine; an idle cluster beside the measured one adds next to nothing).
//! Divided by the calls made, it tells where a call's cost goes, and it moves far less
//! from run to run than throughput does on a shared machine.

use std::{collections::HashMap, ops::AddAssign};

/// Seconds of CPU (user + system).
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    pub bench: f64,
    pub server: f64,
    pub postgres: f64,
}

impl AddAssign for Times {
    fn add_assign(&mut self, other: Times) {
        self.bench += other.bench;
        self.server += other.server;
        self.postgres += other.postgres;
    }
}

impl Times {
    /// "server 36 µs, Postgres 11 µs, load generator 38 µs" per call.
    pub fn per_call(&self, calls: usize) -> String {
        let us = |seconds: f64| seconds / calls.max(1) as f64 * 1e6;
        format!(
            "server {:.0} µs, Postgres {:.0} µs, load generator {:.0} µs",
            us(self.server),
            us(self.postgres),
            us(self.bench)
        )
    }
}

pub struct Meter {
    server_pid: u32,
}

/// CPU seconds so far, per process.
pub struct Snapshot {
    bench: f64,
    server: f64,
    postgres: HashMap<u32, f64>,
}

impl Snapshot {
    /// The CPU time used since `before`. A Postgres process that exited in between is
    /// left out (its time is gone with it); one that started counts in full.
    pub fn since(&self, before: &Snapshot) -> Times {
        Times {
            bench: self.bench - before.bench,
            server: self.server - before.server,
            postgres: self
                .postgres
                .iter()
                .map(|(pid, now)| now - before.postgres.get(pid).copied().unwrap_or(0.0))
                .sum(),
        }
    }
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl Meter {
    pub fn new(server_pid: u32) -> Self {
        Self { server_pid }
    }

    pub fn now(&self) -> Snapshot {
        let mut postgres = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim_end() == "postgres")
            {
                postgres.insert(pid, seconds(pid));
            }
        }
        Snapshot {
            bench: seconds(std::process::id()),
            server: seconds(self.server_pid),
            postgres,
        }
    }
}

/// User + system time of a process, 0 when it is gone.
fn seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is the first, utime the 12th and stime the 13th.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}
