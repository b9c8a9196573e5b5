//! Accounts isolate tenants: each has its own subject space (its own
//! router and shard actors). Until multi-account auth lands every client
//! is in the global account `$G`, as in nats-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::router::{Router, Shard, ShardActor};

pub const GLOBAL_ACCOUNT: &str = "$G";

pub struct Account {
    pub name: String,
    pub router: Router,
    pub connections: AtomicUsize,
}

impl Account {
    pub fn new(name: &str, shards: usize) -> Arc<Self> {
        Arc::new(Account {
            name: name.to_string(),
            router: Router::new(shards),
            connections: AtomicUsize::new(0),
        })
    }

    pub fn num_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Supervises the account's shard actors: a shard that fails is started
/// again over the same trie, so no subscription is lost.
pub struct AccountActor;

pub enum AccountMsg {}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = Arc<Account>;
    type Arguments = Arc<Account>;

    async fn pre_start(
        &self,
        myself: ActorRef<AccountMsg>,
        account: Arc<Account>,
    ) -> Result<Arc<Account>, ActorProcessingErr> {
        for shard in account.router.shards() {
            Actor::spawn_linked(None, ShardActor, shard.clone(), myself.get_cell()).await?;
        }
        Ok(account)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AccountMsg>,
        evt: SupervisionEvent,
        account: &mut Arc<Account>,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            tracing::error!(
                "subscription shard {} of account {} failed: {err}; restarting",
                cell.get_id(),
                account.name
            );
            // Find the shard that lost its actor and give it a new one.
            let orphan: Option<Arc<Shard>> = account
                .router
                .shards()
                .iter()
                .find(|s| {
                    s.actor
                        .read()
                        .as_ref()
                        .is_none_or(|a| a.get_id() == cell.get_id())
                })
                .cloned();
            if let Some(shard) = orphan {
                *shard.actor.write() = None;
                Actor::spawn_linked(None, ShardActor, shard, myself.get_cell()).await?;
            }
        }
        Ok(())
    }
}
