//! Named connection profiles, kept in a TOML file: `$AGENTRY_CLI_CONFIG`, else
//! `$XDG_CONFIG_HOME/agentry/cli.toml`, else `~/.config/agentry/cli.toml`. The file holds
//! API keys, so it is written readable by its owner only.
//!
//! ```toml
//! current = "local"
//! [profiles.local]
//! address = "127.0.0.1:50051"
//! api_key = "agk_…"
//! workspace = "acme"
//! ```

use std::{collections::BTreeMap, path::PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{Failure, Format, status::fail};

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Connection settings under a name; every one is optional (TOML leaves out the unset).
#[derive(Serialize, Deserialize, Default, Debug, Clone, Args)]
#[serde(default)]
pub struct Profile {
    /// Server address: host:port or an http(s):// URL
    #[arg(long)]
    pub address: Option<String>,
    /// Bearer API key
    #[arg(long)]
    pub api_key: Option<String>,
    /// Default workspace for relative names
    #[arg(long)]
    pub workspace: Option<String>,
    /// Default project for relative names
    #[arg(long)]
    pub project: Option<String>,
    /// Default output format
    #[arg(long, value_enum)]
    pub output: Option<Format>,
    /// PEM CA certificate of the server (turns TLS on)
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS)
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the server's certificate against
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(subcommand)]
    command: ProfileCmd,
}

#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// Adds a profile, or replaces the one of that name; the first one becomes current.
    Add {
        name: String,
        #[command(flatten)]
        profile: Box<Profile>,
        /// Make it the current profile
        #[arg(long)]
        r#use: bool,
    },
    /// Makes a profile the current one.
    Use { name: String },
    /// Lists the profiles (API keys are not shown); `*` marks the current one.
    List,
    /// Deletes a profile.
    Delete { name: String },
}

pub fn path() -> Result<PathBuf, Failure> {
    if let Some(path) = std::env::var_os("AGENTRY_CLI_CONFIG") {
        return Ok(path.into());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err(fail!("set HOME or AGENTRY_CLI_CONFIG to keep profiles")),
        },
    };
    Ok(base.join("agentry").join("cli.toml"))
}

pub fn load() -> Result<ConfigFile, Failure> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| fail!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(fail!("{}: {e}", path.display())),
    }
}

fn save(file: &ConfigFile) -> Result<(), Failure> {
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail!("{}: {e}", dir.display()))?;
    }
    let text = toml::to_string_pretty(file).map_err(|e| fail!("{e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write = |options: &std::fs::OpenOptions| -> std::io::Result<()> {
        use std::io::Write as _;
        options.open(&path)?.write_all(text.as_bytes())
    };
    write(&options).map_err(|e| fail!("{}: {e}", path.display()))
}

/// The profile to use: `--profile`/`AGENTRY_PROFILE`, else the current one, else none.
pub fn selected(name: Option<&str>) -> Result<Profile, Failure> {
    let file = load()?;
    let Some(name) = name.map(str::to_owned).or(file.current.clone()) else {
        return Ok(Profile::default());
    };
    file.profiles.get(&name).cloned().ok_or_else(|| {
        fail!(
            "no profile {name:?} in {} (agentry profile list)",
            path().map(|p| p.display().to_string()).unwrap_or_default()
        )
    })
}

pub fn run(args: ProfileArgs) -> Result<(), Failure> {
    let mut file = load()?;
    match args.command {
        ProfileCmd::Add {
            name,
            profile,
            r#use,
        } => {
            if name.is_empty() {
                return Err(fail!("a profile needs a name"));
            }
            file.profiles.insert(name.clone(), *profile);
            if r#use || file.current.is_none() {
                file.current = Some(name.clone());
            }
            save(&file)?;
            println!("profile {name} saved in {}", path()?.display());
        }
        ProfileCmd::Use { name } => {
            if !file.profiles.contains_key(&name) {
                return Err(fail!("no profile {name:?} (agentry profile list)"));
            }
            file.current = Some(name.clone());
            save(&file)?;
            println!("using profile {name}");
        }
        ProfileCmd::List => {
            let rows: Vec<Vec<String>> = file
                .profiles
                .iter()
                .map(|(name, p)| {
                    let current = file.current.as_deref() == Some(name.as_str());
                    vec![
                        if current { "*" } else { "" }.to_owned(),
                        name.clone(),
                        p.address.clone().unwrap_or_default(),
                        p.workspace.clone().unwrap_or_default(),
                        p.project.clone().unwrap_or_default(),
                        if p.tls_ca.is_some() { "yes" } else { "" }.to_owned(),
                    ]
                })
                .collect();
            super::output::print_table(
                &["CURRENT", "NAME", "ADDRESS", "WORKSPACE", "PROJECT", "TLS"],
                &rows,
            );
        }
        ProfileCmd::Delete { name } => {
            if file.profiles.remove(&name).is_none() {
                return Err(fail!("no profile {name:?}"));
            }
            if file.current.as_deref() == Some(name.as_str()) {
                file.current = None;
            }
            save(&file)?;
            println!("profile {name} deleted");
        }
    }
    Ok(())
}
