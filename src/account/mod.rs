//! Accounts isolate tenants: each has its own subject space (its own
//! router and shard actors). The registry maps names to accounts and is
//! the only place that names the global account `$G`, where clients land
//! when nothing says otherwise (as in nats-server). A connection's account
//! is bound when its CONNECT is authenticated.
//!
//! Supervision: the `AccountsSupervisor` owns one `AccountActor` per
//! account, created on demand; each account actor owns its shard actors.
//! The tries live in `Account` (outside every actor), so a restarted actor
//! at either level carries on with every subscription intact.

pub mod mapping;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustc_hash::FxHashMap;

use crate::config::accounts::AccountLimits;
use crate::router::interest::InterestBus;
use crate::router::{Router, Shard, ShardActor, ShardMsg};
use crate::supervision::RestartBudget;
use mapping::{Mapped, MappingTable};

/// nats-server's global account.
const GLOBAL_ACCOUNT: &str = "$G";

pub struct Account {
    pub name: String,
    pub router: Router,
    pub connections: AtomicUsize,
    /// `limits { ... }` of the account's configuration.
    limits: RwLock<AccountLimits>,
    pub stats: AccountStats,
    /// When the account came to be (its /accountz `update_time`).
    pub created: SystemTime,
    /// Internal subscriptions of the server's own services (the system
    /// account's `$SYS.REQ.SERVER...` responders). They are in `router`
    /// and in this account's /accountz count, but not in the server-wide
    /// totals (/varz, /subsz), which count client and import interest.
    pub service_subs: AtomicUsize,
    /// Maps responses of service imports back across accounts (exporters
    /// only), kept for /accountz.
    responses: RwLock<Option<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Internal subscriptions this account's imports installed (and the
    /// account each lives in), removed when its JWT changes.
    imports: parking_lot::Mutex<Vec<(Arc<Account>, Arc<crate::router::Subscription>)>>,
    /// Operator mode: the `iat` of the account JWT last applied.
    jwt_iat: std::sync::atomic::AtomicI64,
    /// Whether `mappings` holds any: the one check a publish makes in an
    /// account without subject mappings (nats-server's `hasMapped`).
    has_mappings: AtomicBool,
    /// Subject mappings applied to what is published in this account.
    mappings: RwLock<Option<Arc<MappingTable>>>,
}

/// Per-account counters (for /accountz).
#[derive(Default)]
pub struct AccountStats {
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    /// Connections refused by `max_connections`, subscriptions by
    /// `max_subscriptions`, messages by `max_payload`.
    pub refused_connections: AtomicU64,
    pub refused_subscriptions: AtomicU64,
    pub refused_payloads: AtomicU64,
}

impl AccountStats {
    pub fn note_out(&self, msgs: u64, bytes: u64) {
        if msgs > 0 {
            self.out_msgs.fetch_add(msgs, Ordering::Relaxed);
            self.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

impl Account {
    /// An account outside any registry (its shard actors are not
    /// started): for unit tests of the index and the engine.
    #[cfg(test)]
    pub(crate) fn detached(name: &str) -> Arc<Self> {
        Self::new(name, 4, None)
    }

    fn new(name: &str, shards: usize, bus: Option<&Arc<InterestBus>>) -> Arc<Self> {
        Arc::new(Account {
            name: name.to_string(),
            router: Router::with_interest(shards, bus.map(|b| (Arc::from(name), b.clone()))),
            connections: AtomicUsize::new(0),
            limits: RwLock::new(AccountLimits::default()),
            stats: AccountStats::default(),
            created: SystemTime::now(),
            service_subs: AtomicUsize::new(0),
            responses: RwLock::new(None),
            imports: parking_lot::Mutex::new(Vec::new()),
            jwt_iat: std::sync::atomic::AtomicI64::new(0),
            has_mappings: AtomicBool::new(false),
            mappings: RwLock::new(None),
        })
    }

    pub fn response_router(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.responses.read().clone()
    }

    pub fn note_import(&self, host: Arc<Account>, sub: Arc<crate::router::Subscription>) {
        self.imports.lock().push((host, sub));
    }

    pub fn take_imports(&self) -> Vec<(Arc<Account>, Arc<crate::router::Subscription>)> {
        std::mem::take(&mut *self.imports.lock())
    }

    pub fn jwt_applied(&self) -> i64 {
        self.jwt_iat.load(Ordering::Acquire)
    }

    pub fn set_jwt_applied(&self, iat: i64) {
        self.jwt_iat.store(iat, Ordering::Release);
    }

    pub fn limits(&self) -> AccountLimits {
        self.limits.read().clone()
    }

    pub fn set_limits(&self, limits: AccountLimits) {
        *self.limits.write() = limits;
    }

    /// Does this account map published subjects? One relaxed load.
    #[inline]
    pub fn has_mappings(&self) -> bool {
        self.has_mappings.load(Ordering::Relaxed)
    }

    /// Install (or, with `None` or an empty table, remove) the account's
    /// subject mappings.
    pub fn set_mappings(&self, table: Option<Arc<MappingTable>>) {
        let table = table.filter(|t| !t.is_empty());
        let has = table.is_some();
        *self.mappings.write() = table;
        self.has_mappings.store(has, Ordering::Relaxed);
    }

    /// The account's mappings applied to a published subject (call when
    /// `has_mappings`).
    pub fn map_subject(&self, subject: &[u8]) -> Mapped {
        match &*self.mappings.read() {
            Some(t) => t.map(subject),
            None => Mapped::Unmapped,
        }
    }

    /// Take one connection slot, or refuse past `max_connections`.
    pub fn try_add_connection(&self) -> bool {
        let max = self.limits.read().max_connections;
        let r = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match max {
                Some(m) if n as u64 >= m => None,
                _ => Some(n + 1),
            });
        if r.is_err() {
            self.stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        r.is_ok()
    }

    /// Keep the response router of this account's service exports alive
    /// with the account.
    pub fn set_response_router(&self, r: Arc<dyn std::any::Any + Send + Sync>) {
        *self.responses.write() = Some(r);
    }

    pub fn num_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct AccountError(pub String);

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every account by name.
pub struct Accounts {
    map: RwLock<FxHashMap<String, Arc<Account>>>,
    shards: usize,
    /// Route peers told of local interest (a clustered server only).
    pub interest: Option<Arc<InterestBus>>,
    supervisor: RwLock<Option<ActorRef<AccountsMsg>>>,
}

impl Accounts {
    /// The registry with the global account in it (its actors start with
    /// the `AccountsSupervisor`).
    pub fn new(shards: usize, interest: Option<Arc<InterestBus>>) -> Arc<Self> {
        let mut map = FxHashMap::default();
        map.insert(
            GLOBAL_ACCOUNT.to_string(),
            Account::new(GLOBAL_ACCOUNT, shards, interest.as_ref()),
        );
        Arc::new(Accounts {
            map: RwLock::new(map),
            shards,
            interest,
            supervisor: RwLock::new(None),
        })
    }

    /// The name an account binding resolves to (`None`: the global account).
    pub fn name_of(name: Option<&str>) -> &str {
        name.unwrap_or(GLOBAL_ACCOUNT)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.map.read().get(name).cloned()
    }

    /// The account a client lands in when nothing names one.
    pub fn default_account(&self) -> Arc<Account> {
        self.get(GLOBAL_ACCOUNT)
            .unwrap_or_else(|| Account::new(GLOBAL_ACCOUNT, self.shards, self.interest.as_ref()))
    }

    /// The account `name` (or the default), its actors started on demand.
    pub async fn bind(&self, name: Option<&str>) -> Result<Arc<Account>, AccountError> {
        let name = name.unwrap_or(GLOBAL_ACCOUNT);
        if let Some(a) = self.get(name) {
            return Ok(a);
        }
        let sup = self
            .supervisor
            .read()
            .clone()
            .ok_or_else(|| AccountError("accounts supervisor unavailable".into()))?;
        let name = name.to_string();
        ractor::call!(sup, AccountsMsg::Ensure, name)
            .map_err(|e| AccountError(format!("cannot start account: {e}")))
    }

    pub fn all(&self) -> Vec<Arc<Account>> {
        self.map.read().values().cloned().collect()
    }

    /// Subscriptions in every account, less the server's own service
    /// responders (`Account::service_subs`).
    pub fn total_subscriptions(&self) -> usize {
        self.all()
            .iter()
            .map(|a| {
                a.router
                    .count()
                    .saturating_sub(a.service_subs.load(Ordering::Relaxed))
            })
            .sum()
    }

    /// Fault injection for the supervision tests: panic one shard actor
    /// of the default account.
    #[doc(hidden)]
    pub fn inject_shard_panic(&self, shard: usize) {
        let acc = self.default_account();
        if let Some(s) = acc.router.shards().get(shard)
            && let Some(a) = s.actor.read().clone()
        {
            let _ = a.cast(ShardMsg::InjectPanic);
        }
    }
}

pub enum AccountsMsg {
    /// Create the account (and its actors) if it does not exist yet.
    Ensure(String, RpcReplyPort<Arc<Account>>),
}

/// Owns one `AccountActor` per account.
pub struct AccountsSupervisor;

pub struct AccountsState {
    accounts: Arc<Accounts>,
    /// Which account each child actor serves.
    children: FxHashMap<ractor::ActorId, Arc<Account>>,
    budget: RestartBudget,
}

impl AccountsSupervisor {
    async fn start_account(
        myself: &ActorRef<AccountsMsg>,
        st: &mut AccountsState,
        account: Arc<Account>,
    ) -> Result<(), ActorProcessingErr> {
        let (a, _) =
            Actor::spawn_linked(None, AccountActor, account.clone(), myself.get_cell()).await?;
        st.children.insert(a.get_id(), account);
        Ok(())
    }
}

impl Actor for AccountsSupervisor {
    type Msg = AccountsMsg;
    type State = AccountsState;
    type Arguments = Arc<Accounts>;

    async fn pre_start(
        &self,
        myself: ActorRef<AccountsMsg>,
        accounts: Arc<Accounts>,
    ) -> Result<AccountsState, ActorProcessingErr> {
        let mut st = AccountsState {
            accounts: accounts.clone(),
            children: FxHashMap::default(),
            budget: RestartBudget::default_tree(),
        };
        // After a restart, every account that exists gets its actors back.
        for account in accounts.all() {
            Self::start_account(&myself, &mut st, account).await?;
        }
        *accounts.supervisor.write() = Some(myself);
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AccountsMsg>,
        st: &mut AccountsState,
    ) -> Result<(), ActorProcessingErr> {
        *st.accounts.supervisor.write() = None;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountsMsg>,
        msg: AccountsMsg,
        st: &mut AccountsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountsMsg::Ensure(name, reply) => {
                let existing = st.accounts.get(&name);
                let account = match existing {
                    Some(a) => a,
                    None => {
                        let a =
                            Account::new(&name, st.accounts.shards, st.accounts.interest.as_ref());
                        Self::start_account(&myself, st, a.clone()).await?;
                        st.accounts.map.write().insert(name, a.clone());
                        a
                    }
                };
                let _ = reply.send(account);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AccountsMsg>,
        evt: SupervisionEvent,
        st: &mut AccountsState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why, _)) = crate::supervision::ended(&evt) else {
            return Ok(());
        };
        let Some(account) = st.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if !st.budget.allow() {
            return Err(format!(
                "account {} failed too often ({why}); escalating",
                account.name
            )
            .into());
        }
        tracing::error!("account {} actor ended: {why}; restarting", account.name);
        Self::start_account(&myself, st, account).await
    }
}

/// Supervises one account's shard actors: a shard that fails is started
/// again over the same trie, so no subscription is lost.
pub struct AccountActor;

pub enum AccountMsg {}

pub struct AccountActorState {
    account: Arc<Account>,
    budget: RestartBudget,
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountActorState;
    type Arguments = Arc<Account>;

    async fn pre_start(
        &self,
        myself: ActorRef<AccountMsg>,
        account: Arc<Account>,
    ) -> Result<AccountActorState, ActorProcessingErr> {
        for shard in account.router.shards() {
            Actor::spawn_linked(None, ShardActor, shard.clone(), myself.get_cell()).await?;
        }
        Ok(AccountActorState {
            account,
            budget: RestartBudget::default_tree(),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AccountMsg>,
        evt: SupervisionEvent,
        st: &mut AccountActorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why, _)) = crate::supervision::ended(&evt) else {
            return Ok(());
        };
        // Find the shard that lost its actor.
        let orphan: Option<Arc<Shard>> = st
            .account
            .router
            .shards()
            .iter()
            .find(|s| {
                s.actor
                    .read()
                    .as_ref()
                    .is_some_and(|a| a.get_id() == cell.get_id())
            })
            .cloned();
        let Some(shard) = orphan else {
            return Ok(());
        };
        *shard.actor.write() = None;
        if !st.budget.allow() {
            return Err(format!(
                "subscription shards of account {} failed too often ({why}); escalating",
                st.account.name
            )
            .into());
        }
        tracing::error!(
            "subscription shard {} of account {} ended: {why}; restarting",
            cell.get_id(),
            st.account.name
        );
        Actor::spawn_linked(None, ShardActor, shard, myself.get_cell()).await?;
        Ok(())
    }
}
