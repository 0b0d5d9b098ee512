//! The storage port (`agentry_core::port`) as [`Store`] implements it. Each kind of
//! resource's trait is implemented where its operations live (`workspaces`,
//! `contexts::reads`, `execution::worker` …); the upkeep calls, spread over several
//! modules, are gathered here.

use agentry_core::{
    Result,
    port::{PoolConnections, ReapReport, RunReaper, Storage, Upkeep},
};
use async_trait::async_trait;

use crate::Store;

impl Storage for Store {}

#[async_trait]
impl Upkeep for Store {
    async fn page_token_key(&self) -> Result<String> {
        Store::page_token_key(self).await
    }
    async fn root_key_hash(&self) -> Result<(Vec<u8>, Option<String>)> {
        Store::root_key_hash(self).await
    }
    async fn readiness(&self) -> std::result::Result<(), String> {
        Store::readiness(self).await
    }
    fn pool_connections(&self) -> PoolConnections {
        Store::pool_connections(self)
    }
    async fn count_runs_by_status(&self) -> Result<Vec<(String, i64)>> {
        Store::count_runs_by_status(self).await
    }
    async fn reap_runs(&self, reaper: &mut RunReaper) -> Result<ReapReport> {
        Store::reap_runs(self, reaper).await
    }
    async fn purge_idempotency_keys(&self, before: i64) -> Result<u64> {
        Store::purge_idempotency_keys(self, before).await
    }
    async fn roll_run_stats(&self, max_time: std::time::Duration) -> Result<(u64, bool)> {
        Store::roll_run_stats(self, max_time).await
    }
    async fn close(&self) {
        Store::close(self).await
    }
}
