//! CPU time used by the processes of a measurement, read from `/proc` (Linux): the load
//! generator (this process), the server, a peer system measured beside it (etcd,
//! graphile-worker's Node process), and Postgres (every process named `postgres` on the
//! machine; an idle cluster beside the measured one adds next to nothing).
//! Divided by the calls made, it tells where a call's cost goes, and it moves far less
//! from run to run than throughput does on a shared machine.

use std::{collections::HashMap, ops::AddAssign};

/// Seconds of CPU (user + system).
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    pub bench: f64,
    pub server: f64,
    pub postgres: f64,
    pub peer: f64,
}

impl AddAssign for Times {
    fn add_assign(&mut self, other: Times) {
        self.bench += other.bench;
        self.server += other.server;
        self.postgres += other.postgres;
        self.peer += other.peer;
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

    /// Microseconds per call of the system measured (`peer`, when named, else the
    /// server), Postgres and the load generator.
    pub fn per_call_of(&self, calls: usize, peer: Option<&str>) -> String {
        let us = |seconds: f64| seconds / calls.max(1) as f64 * 1e6;
        let (name, own) = match peer {
            Some(name) => (name, self.peer),
            None => ("server", self.server),
        };
        format!(
            "{name} {:.0} µs, Postgres {:.0} µs, load generator {:.0} µs",
            us(own),
            us(self.postgres),
            us(self.bench)
        )
    }
}

pub struct Meter {
    server_pid: u32,
    peer_pid: Option<u32>,
    /// When known, only this cluster's processes count as Postgres (other clusters on
    /// the machine, such as test runs, are left out).
    postmaster_pid: Option<u32>,
}

/// CPU seconds so far, per process.
pub struct Snapshot {
    bench: f64,
    server: f64,
    peer: f64,
    postgres: HashMap<u32, f64>,
    /// The CPU time of the postmaster's children that have exited (and been waited
    /// for): backends of connections that closed, such as pgbench's.
    postgres_exited: f64,
}

impl Snapshot {
    /// The CPU time used since `before`. A Postgres process that started in between
    /// counts in full; one that exited counts through the postmaster's children's time,
    /// less what it had used before.
    pub fn since(&self, before: &Snapshot) -> Times {
        let live: f64 = self
            .postgres
            .iter()
            .map(|(pid, now)| now - before.postgres.get(pid).copied().unwrap_or(0.0))
            .sum();
        let gone_before: f64 = before
            .postgres
            .iter()
            .filter(|(pid, _)| !self.postgres.contains_key(pid))
            .map(|(_, used)| used)
            .sum();
        let exited = self.postgres_exited - before.postgres_exited - gone_before;
        Times {
            bench: self.bench - before.bench,
            server: self.server - before.server,
            peer: self.peer - before.peer,
            postgres: live + exited.max(0.0),
        }
    }
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl Meter {
    pub fn new(server_pid: u32) -> Self {
        Self {
            server_pid,
            peer_pid: None,
            postmaster_pid: None,
        }
    }

    /// Counts only the Postgres processes of the cluster behind `database_url` (its
    /// postmaster and the postmaster's children).
    pub async fn for_cluster(mut self, database_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let mut db = sqlx::PgConnection::connect(database_url).await?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut db)
            .await?;
        self.postmaster_pid = parent(backend as u32);
        db.close().await?;
        Ok(self)
    }

    /// Also meters `pid`, a peer system measured beside the server.
    pub fn with_peer(mut self, pid: u32) -> Self {
        self.peer_pid = Some(pid);
        self
    }

    pub fn now(&self) -> Snapshot {
        let mut postgres = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let in_cluster = match self.postmaster_pid {
                Some(postmaster) => pid == postmaster || parent(pid) == Some(postmaster),
                None => true,
            };
            if in_cluster
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|name| name.trim_end() == "postgres")
            {
                postgres.insert(pid, seconds(pid));
            }
        }
        Snapshot {
            bench: seconds(std::process::id()),
            server: seconds(self.server_pid),
            peer: self.peer_pid.map_or(0.0, seconds),
            postgres,
            postgres_exited: self.postmaster_pid.map_or(0.0, children_seconds),
        }
    }
}

/// The fields of `/proc/{pid}/stat` after the command name, which is in parentheses and
/// may hold spaces: state is the first, the parent's pid the second, utime the 12th,
/// stime the 13th, cutime the 14th and cstime the 15th.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// User + system time of a process, 0 when it is gone.
fn seconds(pid: u32) -> f64 {
    stat_seconds(pid, 11, 12)
}

/// User + system time of a process's children that exited and were waited for
/// (cutime, cstime).
fn children_seconds(pid: u32) -> f64 {
    stat_seconds(pid, 13, 14)
}

fn stat_seconds(pid: u32, user: usize, system: usize) -> f64 {
    let Some(fields) = stat_fields(pid) else {
        return 0.0;
    };
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(user) + ticks(system)) / TICKS_PER_SECOND
}
