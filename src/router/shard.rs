//! The shard actor: sole writer of one subscription trie.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{Shard, Subscription};

pub enum ShardMsg {
    /// Add a subscription; the reply is sent once it is matchable.
    Insert(Arc<Subscription>, RpcReplyPort<()>),
    Remove(Vec<Arc<Subscription>>),
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
                    shard.index.write().insert(sub);
                    shard.cache.invalidate(&subject);
                }
                // The subscriber may have gone away; nothing to do then.
                let _ = reply.send(());
            }
            ShardMsg::Remove(subs) => remove_now(shard, &subs),
            ShardMsg::InjectPanic => panic!("injected fault in a subscription shard"),
        }
        Ok(())
    }
}

/// Remove subscriptions from a shard's trie.
pub(crate) fn remove_now(shard: &Shard, subs: &[Arc<Subscription>]) {
    let mut removed = Vec::new();
    {
        let mut index = shard.index.write();
        for sub in subs {
            if index.remove(sub) {
                removed.push(&sub.subject);
            }
        }
    }
    // One invalidation per distinct pattern, after the trie write.
    removed.sort_unstable();
    removed.dedup();
    for subject in removed {
        shard.cache.invalidate(subject);
    }
}
