//! `agentry health`: asks a server's `grpc.health.v1` whether it is SERVING, over the same
//! connection every client command makes ([`super::conn`]): plaintext, TLS or mutual TLS
//! from `--address`, `--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-server-name`, their
//! `AGENTRY_*` variables or the profile.
//!
//! Prints the status and exits 0 when SERVING, 1 otherwise; a server it cannot reach
//! exits 8 like every client command. Without an address from a flag, `AGENTRY_ADDRESS`
//! or the profile, it asks `AGENTRY_LISTEN` (the server's own setting, so that a
//! container's health check can run in the server's environment), else the default.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{Failure, Global, conn::Client, profile};

/// Runs the probe; `service` empty asks about the server as a whole.
pub async fn run(mut global: Global, service: String) -> Result<(), Failure> {
    if global.address.is_none()
        && profile::selected(global.profile.as_deref())?
            .address
            .is_none()
    {
        global.address = std::env::var("AGENTRY_LISTEN")
            .ok()
            .filter(|v| !v.trim().is_empty());
    }
    let client = Client::new(global)?;
    let status = HealthClient::new(client.channel())
        .check(HealthCheckRequest { service })
        .await?
        .into_inner()
        .status();
    println!("{}", status.as_str_name());
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(Failure::Exit(super::status::LOCAL))
    }
}
