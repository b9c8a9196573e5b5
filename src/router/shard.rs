//! The shard actor: sole writer of one subscription trie.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{Shard, Subscription};

pub enum ShardMsg {
    /// Add a subscription; the reply is sent once it is matchable.
    Insert(Arc<Subscription>, RpcReplyPort<()>),
    Remove(Vec<Arc<Subscription>>),
    /// Write the shard's local interest to a new route peer, in order
    /// with the changes this actor makes (see `interest.rs`).
    Sync(Arc<crate::outbound::Outlet>),
    /// Fault injection for the supervision tests.
    #[doc(hidden)]
    InjectPanic,
}

/// The trie lives in `Shard`, outside the actor's state, so a restarted
/// shard actor carries on with every subscription intact.
pub struct ShardActor;

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = Arc<Shard>;
    type Arguments = Arc<Shard>;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        shard: Arc<Shard>,
    ) -> Result<Arc<Shard>, ActorProcessingErr> {
        *shard.actor.write() = Some(myself);
        Ok(shard)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        shard: &mut Arc<Shard>,
    ) -> Result<(), ActorProcessingErr> {
        *shard.actor.write() = None;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        shard: &mut Arc<Shard>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Insert(sub, reply) => {
                // A connection may close between sending SUB and this
                // insert; its cleanup already ran, so do not resurrect it.
                if !sub.is_closed() {
                    let subject = sub.subject.clone();
                    shard.index.write().insert(sub.clone());
                    shard.cache.invalidate(&subject);
                    shard.note_added(&sub);
                }
                // The subscriber may have gone away; nothing to do then.
                let _ = reply.send(());
            }
            ShardMsg::Remove(subs) => remove_now(shard, &subs),
            ShardMsg::Sync(peer) => shard.sync_peer(&peer),
            ShardMsg::InjectPanic => panic!("injected fault in a subscription shard"),
        }
        Ok(())
    }
}

/// Remove subscriptions from a shard's trie.
pub(crate) fn remove_now(shard: &Shard, subs: &[Arc<Subscription>]) {
    let mut removed: Vec<&Arc<Subscription>> = Vec::new();
    {
        let mut index = shard.index.write();
        for sub in subs {
            if index.remove(sub) {
                removed.push(sub);
            }
        }
    }
    for sub in &removed {
        shard.note_removed(sub);
    }
    // One invalidation per distinct pattern, after the trie write.
    let mut subjects: Vec<&bytes::Bytes> = removed.iter().map(|s| &s.subject).collect();
    subjects.sort_unstable();
    subjects.dedup();
    for subject in subjects {
        shard.cache.invalidate(subject);
    }
}
