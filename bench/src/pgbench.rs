//! The pgbench ceilings: a script run at a concurrency for `--seconds`, in tps.

use std::{io::Write as _, process::Command};

use anyhow::{Context as _, bail};

use crate::Cli;

/// [`tps`] of a reference written for this server's schema: when it fails (the
/// `--binary` is a server of another version, whose tables differ), a line on stderr and
/// NaN, so that the server's own figures are still measured and printed.
pub fn reference(
    cli: &Cli,
    database_url: &str,
    script: &str,
    defines: &[(&str, String)],
    concurrency: usize,
) -> f64 {
    tps(cli, database_url, script, defines, concurrency).unwrap_or_else(|error| {
        let first = format!("{error:#}");
        let cause = first
            .lines()
            .rev()
            .find(|l| l.contains("ERROR"))
            .unwrap_or("");
        eprintln!("  (pgbench reference not measured: {})", cause.trim());
        f64::NAN
    })
}

/// Transactions per second of `script` through `pgbench -M prepared` with `concurrency`
/// clients, `-D name=value` for each of `defines`.
pub fn tps(
    cli: &Cli,
    database_url: &str,
    script: &str,
    defines: &[(&str, String)],
    concurrency: usize,
) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!(
        "{}-{}-agentry-bench.sql",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::File::create(&path)?.write_all(script.as_bytes())?;
    let mut command = Command::new(&cli.pgbench);
    command.args(["-n", "-M", "prepared", "-f"]).arg(&path);
    for (name, value) in defines {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    let output = command
        .args([
            "-c",
            &concurrency.to_string(),
            "-j",
            &concurrency.min(2).to_string(),
            "-T",
            &cli.seconds.to_string(),
            database_url,
        ])
        .output()
        .with_context(|| format!("cannot run {}", cli.pgbench));
    let _ = std::fs::remove_file(&path);
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("no tps in pgbench output: {stdout}"))
}
