//! The subscription trie: one level per subject token, with separate
//! branches for `*` and `>`. Mutated only by its shard actor (under the
//! write lock); matched by every publisher (under the read lock) on a
//! cache miss.

use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::{SubResult, Subscription};

#[derive(Default)]
struct Node {
    psubs: Vec<Arc<Subscription>>,
    /// Queue subscribers grouped by queue name.
    qsubs: Vec<(Bytes, Vec<Arc<Subscription>>)>,
    next: Option<Box<Level>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.psubs.is_empty()
            && self.qsubs.is_empty()
            && self.next.as_ref().is_none_or(|l| l.is_empty())
    }
}

#[derive(Default)]
struct Level {
    literal: FxHashMap<Box<[u8]>, Node>,
    pwc: Option<Box<Node>>,
    fwc: Option<Box<Node>>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.pwc.is_none() && self.fwc.is_none()
    }
}

#[derive(Default)]
pub struct Sublist {
    root: Level,
    count: usize,
}

impl Sublist {
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn insert(&mut self, sub: Arc<Subscription>) {
        let subject = sub.subject.clone();
        let mut level = &mut self.root;
        let mut tokens = subject.split(|&b| b == b'.').peekable();
        loop {
            let tok = tokens.next().unwrap_or_default();
            let node: &mut Node = match tok {
                b"*" => level.pwc.get_or_insert_with(Default::default),
                b">" => level.fwc.get_or_insert_with(Default::default),
                t => level.literal.entry(t.into()).or_default(),
            };
            if tokens.peek().is_none() {
                match &sub.queue {
                    None => node.psubs.push(sub),
                    Some(q) => match node.qsubs.iter_mut().find(|(name, _)| name == q) {
                        Some((_, members)) => members.push(sub),
                        None => node.qsubs.push((q.clone(), vec![sub])),
                    },
                }
                self.count += 1;
                return;
            }
            level = node.next.get_or_insert_with(Default::default);
        }
    }

    /// Remove this exact subscription (by identity). Empty branches are
    /// pruned so memory returns after a subscription flood.
    pub fn remove(&mut self, sub: &Arc<Subscription>) -> bool {
        let tokens: Vec<&[u8]> = sub.subject.split(|&b| b == b'.').collect();
        let removed = remove_from(&mut self.root, &tokens, sub);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// All subscriptions whose pattern matches the literal `subject`.
    pub fn matches(&self, subject: &[u8], out: &mut SubResult) {
        let tokens: smallvec_tokens::Tokens = smallvec_tokens::split(subject);
        match_level(&self.root, tokens.as_slice(), out);
    }
}

fn remove_from(level: &mut Level, tokens: &[&[u8]], sub: &Arc<Subscription>) -> bool {
    let Some((&tok, rest)) = tokens.split_first() else {
        return false;
    };
    let node: &mut Node = match tok {
        b"*" => match level.pwc.as_deref_mut() {
            Some(n) => n,
            None => return false,
        },
        b">" => match level.fwc.as_deref_mut() {
            Some(n) => n,
            None => return false,
        },
        t => match level.literal.get_mut(t) {
            Some(n) => n,
            None => return false,
        },
    };
    let removed = if rest.is_empty() {
        remove_sub_from_node(node, sub)
    } else {
        match node.next.as_deref_mut() {
            Some(next) => remove_from(next, rest, sub),
            None => false,
        }
    };
    if removed && node.is_empty() {
        match tok {
            b"*" => level.pwc = None,
            b">" => level.fwc = None,
            t => {
                level.literal.remove(t);
            }
        }
    }
    removed
}

fn remove_sub_from_node(node: &mut Node, sub: &Arc<Subscription>) -> bool {
    match &sub.queue {
        None => match node.psubs.iter().position(|s| Arc::ptr_eq(s, sub)) {
            Some(i) => {
                node.psubs.swap_remove(i);
                true
            }
            None => false,
        },
        Some(q) => {
            let Some(gi) = node.qsubs.iter().position(|(name, _)| name == q) else {
                return false;
            };
            let members = &mut node.qsubs[gi].1;
            let Some(i) = members.iter().position(|s| Arc::ptr_eq(s, sub)) else {
                return false;
            };
            members.swap_remove(i);
            if members.is_empty() {
                node.qsubs.swap_remove(gi);
            }
            true
        }
    }
}

fn add_node(node: &Node, out: &mut SubResult) {
    out.psubs.extend(node.psubs.iter().cloned());
    for (name, members) in &node.qsubs {
        out.add_queue_members(name, members);
    }
}

fn match_level(level: &Level, tokens: &[&[u8]], out: &mut SubResult) {
    let Some((tok, rest)) = tokens.split_first() else {
        return;
    };
    // `>` matches this token and everything after it.
    if let Some(fwc) = &level.fwc {
        add_node(fwc, out);
    }
    if let Some(pwc) = &level.pwc {
        visit(pwc, rest, out);
    }
    if let Some(node) = level.literal.get(*tok) {
        visit(node, rest, out);
    }
}

fn visit(node: &Node, rest: &[&[u8]], out: &mut SubResult) {
    if rest.is_empty() {
        add_node(node, out);
    } else if let Some(next) = &node.next {
        match_level(next, rest, out);
    }
}

/// Token splitting without a heap allocation for the common case of a
/// subject with up to 16 tokens.
mod smallvec_tokens {
    // The inline variant is large on purpose: it lives on the stack for
    // one match and saves the allocation.
    #[allow(clippy::large_enum_variant)]
    pub enum Tokens<'a> {
        Inline([&'a [u8]; 16], usize),
        Heap(Vec<&'a [u8]>),
    }

    impl<'a> Tokens<'a> {
        pub fn as_slice(&self) -> &[&'a [u8]] {
            match self {
                Tokens::Inline(a, n) => &a[..*n],
                Tokens::Heap(v) => v,
            }
        }
    }

    pub fn split(subject: &[u8]) -> Tokens<'_> {
        let mut arr: [&[u8]; 16] = [&[]; 16];
        let mut n = 0;
        for t in subject.split(|&b| b == b'.') {
            if n == 16 {
                return Tokens::Heap(subject.split(|&b| b == b'.').collect());
            }
            arr[n] = t;
            n += 1;
        }
        Tokens::Inline(arr, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{Outlet, OutletKind};

    /// The deepest subject a control line within `MAX_CONTROL_LINE_CAP`
    /// can carry is inserted, matched and removed on a quarter of a tokio
    /// worker's stack: the recursion cannot overflow a real one.
    #[test]
    fn deepest_subject_fits_a_small_stack() {
        let tokens = crate::config::MAX_CONTROL_LINE_CAP / 2;
        let run = move || {
            let outlet = Arc::new(Outlet::new(
                1,
                OutletKind::Client,
                ([127, 0, 0, 1], 1).into(),
                1024,
            ));
            let deep = |last: &str| {
                let mut s = "a.".repeat(tokens - 1);
                s.push_str(last);
                Bytes::from(s)
            };
            let mut list = Sublist::default();
            let subs: Vec<_> = ["a", "*", ">"]
                .iter()
                .map(|last| {
                    Arc::new(Subscription::client(
                        deep(last),
                        None,
                        Bytes::from_static(b"1"),
                        outlet.clone(),
                    ))
                })
                .collect();
            for s in &subs {
                list.insert(s.clone());
            }
            let mut out = SubResult::default();
            list.matches(&deep("a"), &mut out);
            assert_eq!(out.psubs.len(), 3);
            for s in &subs {
                assert!(list.remove(s));
            }
            assert_eq!(list.count(), 0);
        };
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(run)
            .expect("thread")
            .join()
            .expect("no stack overflow");
    }
}
