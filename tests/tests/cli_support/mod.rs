//! The real `agentry` binary as a client of a test server: each call is a child process
//! with its own environment (address, key, a private CLI config file), so that the
//! tests see exactly what a user sees: stdout, stderr and the exit status.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use agentry_e2e::process::agentry_bin;
use serde_json::Value;
use tokio::process::{Child, Command};

pub struct Cli {
    bin: PathBuf,
    env: Vec<(String, String)>,
    pub dir: PathBuf,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "the command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cli {
    /// The binary aimed at `address` with `key`, and a config file of its own.
    pub fn new(address: impl std::fmt::Display, key: &str) -> Self {
        static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let bin = BIN.get_or_init(agentry_bin).clone();
        let dir = std::env::temp_dir().join(format!("agentry-cli-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create the CLI's directory");
        let env = vec![
            ("AGENTRY_ADDRESS".to_owned(), address.to_string()),
            ("AGENTRY_API_KEY".to_owned(), key.to_owned()),
            (
                "AGENTRY_CLI_CONFIG".to_owned(),
                dir.join("cli.toml").display().to_string(),
            ),
        ];
        Self { bin, env, dir }
    }

    /// Another environment variable for every call (or, with an empty value, none).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args).env_clear();
        command.env("PATH", std::env::var("PATH").unwrap_or_default());
        command.env("HOME", &self.dir);
        for (key, value) in &self.env {
            if !value.is_empty() {
                command.env(key, value);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("agentry {args:?} did not finish"))
            .expect("run agentry");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }

    /// Runs a command that must succeed and print JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "agentry {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("agentry {args:?}: not JSON ({e}): {}", out.stdout))
    }

    /// Runs a command that must fail with `code`; returns its one line of stderr.
    pub async fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args).await;
        assert_eq!(
            out.code, code,
            "agentry {args:?}: wanted exit {code}, got {}: {}{}",
            out.code, out.stdout, out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "one line: {:?}", out.stderr);
        out.stderr.trim_end().to_owned()
    }

    /// A long-running command (`runs follow`, `contexts watch`).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("spawn agentry")
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write a file for the CLI");
        path
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// The items of a list response's JSON.
pub fn items<'a>(listed: &'a Value, field: &str) -> &'a Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    listed[field].as_array().unwrap_or(&EMPTY)
}

pub fn names(listed: &Value, field: &str) -> Vec<String> {
    items(listed, field)
        .iter()
        .map(|item| item["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}
