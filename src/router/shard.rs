//! The shard actor: sole writer of one subscription trie.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{Shard, Subscription};

pub enum ShardMsg {
    /// Add a subscription; the reply is sent once it is matchable.
    Insert(Arc<Subscription>, RpcReplyPort<()>),
    Remove(Vec<Arc<Subscription>>),
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
                    let mut index = shard.index.write();
                    index.insert(sub);
                    shard.generation.fetch_add(1, Ordering::AcqRel);
                }
                // The subscriber may have gone away; nothing to do then.
                let _ = reply.send(());
            }
            ShardMsg::Remove(subs) => remove_now(shard, &subs),
        }
        Ok(())
    }
}

/// Remove subscriptions from a shard's trie.
pub(crate) fn remove_now(shard: &Shard, subs: &[Arc<Subscription>]) {
    let mut index = shard.index.write();
    let mut changed = false;
    for sub in subs {
        changed |= index.remove(sub);
    }
    if changed {
        shard.generation.fetch_add(1, Ordering::AcqRel);
    }
}
