//! Leases: every nonce handed out ends confirmed, released or burned.
//!
//! A released nonce is reused. The most recent one goes back by rewinding
//! the counter (`lastUsed`, n → n−1, by `compare_and_set`); any other goes
//! on the account's free list (`…:released`), which every instance reads.
//! Leases move the counter by `compare_and_set`, never past the original's
//! 500-nonce window (where `assign_nonce` would start again at the chain's
//! count). Only per-key atomic steps are used, so this works on every backend;
//! `docs/design.md` ("Nonce leases") gives the argument.

use std::fmt;

use super::{Address, NonceManager, BACKEND};
use crate::backoff::Backoff;
use crate::{Error, ErrorKind, Operation, Result};
use std::time::Duration;

/// Most entries the free list holds; a release beyond it burns its nonce.
pub const FREE_LIST_LIMIT: usize = 4096;

/// Read-decide-write rounds a lease or a release tries under contention.
const ROUNDS: usize = 200;

/// After a rewind, at most this many listed nonces just below the counter
/// are folded back into it.
const COLLAPSE_STEPS: usize = 16;

/// A nonce handed out by [`NonceManager::lease`], until its fate is known.
///
/// End it with [`confirm`](Self::confirm) (the node accepted the
/// transaction), [`release`](Self::release) (it was certainly not
/// broadcast: the nonce is reused) or [`burn`](Self::burn) (the outcome is
/// unknown: keep the nonce out of use and let repair decide). Dropping an
/// undecided lease counts as burned and logs a warning.
#[must_use = "a lease must be confirmed, released or burned"]
pub struct NonceLease {
    manager: NonceManager,
    address: Address,
    nonce: u64,
    decided: bool,
}

impl fmt::Debug for NonceLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceLease")
            .field("nonce", &self.nonce)
            .field("address", &self.address)
            .finish()
    }
}

/// What [`NonceLease::release`] did with the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// It was the most recent nonce: the counter went back to before it.
    Rewound,
    /// It went on the account's free list; the next lease takes it.
    Listed,
    /// The free list is full; the nonce stays a gap for repair to fill.
    Burned,
}

impl NonceLease {
    /// The nonce to send with.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The account it belongs to.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The node accepted the transaction. Writes nothing.
    pub fn confirm(mut self) {
        self.decided = true;
    }

    /// The outcome of the send is unknown: the nonce is never reused by a
    /// lease. Writes nothing; logs a warning, since the chain may wait on it.
    pub fn burn(mut self) {
        self.decided = true;
        self.manager.warn_burned(self.nonce, "burned");
    }

    /// End the lease without a warning: the chain has the nonce already
    /// ("nonce too low"), or the caller took it out of the lease (alloy's
    /// `NonceManager` trait cannot report back).
    pub(crate) fn hand_off(mut self) -> u64 {
        self.decided = true;
        self.nonce
    }

    /// The transaction was certainly not broadcast: give the nonce back so
    /// the next lease reuses it.
    ///
    /// An error here (the store unreachable, a lost reply) leaves the nonce
    /// either reusable or a gap, never in two hands: the chain then waits
    /// on the gap until a transaction fills it or the account is reset.
    pub async fn release(mut self) -> Result<Released> {
        self.decided = true;
        let manager = self.manager.clone();
        manager.release_nonce(&self.address, self.nonce).await
    }
}

impl Drop for NonceLease {
    fn drop(&mut self) {
        if !self.decided {
            self.manager.warn_burned(
                self.nonce,
                "dropped without confirm, release or burn; counted as burned",
            );
        }
    }
}

/// The free list: a version that every write bumps (so a compare-and-set
/// never mistakes a list that changed and changed back for the one it
/// read), then the nonces, ascending: `"7|3,5,9"`; `"7|"` when empty.
struct FreeList {
    version: u64,
    nonces: Vec<u64>,
}

impl FreeList {
    fn parse(raw: Option<&str>, key: &str) -> Result<FreeList> {
        let Some(raw) = raw else {
            return Ok(FreeList {
                version: 0,
                nonces: Vec::new(),
            });
        };
        let junk = || {
            Error::new(
                ErrorKind::NotAnInteger,
                BACKEND,
                Operation::Get,
                format!(
                    "{key} holds {raw:?}, not a list of nonces; delete it to start the list again"
                ),
            )
        };
        let (version, list) = raw.split_once('|').ok_or_else(junk)?;
        let version = version.parse().map_err(|_| junk())?;
        let mut nonces = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',')
                .map(|n| n.parse::<u64>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| junk())?
        };
        nonces.sort_unstable();
        nonces.dedup();
        Ok(FreeList { version, nonces })
    }

    /// The value that replaces this one, holding `nonces`.
    fn written(&self, nonces: &[u64]) -> String {
        let mut out = format!("{}|", self.version + 1);
        for (i, n) in nonces.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&n.to_string());
        }
        out
    }
}

pub(super) fn parse_last_used(raw: Option<&str>, key: &str) -> Result<Option<i64>> {
    raw.map(|v| {
        v.parse().map_err(|_| {
            Error::new(
                ErrorKind::NotAnInteger,
                BACKEND,
                Operation::Get,
                format!("{key} holds {v:?}, not a nonce"),
            )
        })
    })
    .transpose()
}

fn contended(op: Operation, what: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        BACKEND,
        op,
        format!("{what} lost {ROUNDS} compare-and-set rounds to other instances; try again"),
    )
    .with_temporary(true)
}

impl NonceManager {
    /// The key of the account's free list (without the store's prefix).
    pub fn released_key(&self, address: &Address) -> String {
        format!(
            "nonce:{}:{}:released",
            self.chain_id,
            address.to_checksum(None)
        )
    }

    /// Lease the next nonce for `address`: the lowest released nonce that
    /// the chain has not passed, else a new one from the counter (as
    /// [`assign`](Self::assign) does). One chain read.
    pub async fn lease(&self, address: &Address) -> Result<NonceLease> {
        let pending = self.chain.pending(address).await?;
        self.lease_from(address, pending, true).await
    }

    /// [`lease`](Self::lease) with the chain's pending count read by the
    /// caller (from an alloy provider, say).
    pub async fn lease_at(&self, address: &Address, pending: u64) -> Result<NonceLease> {
        self.lease_from(address, pending, false).await
    }

    async fn lease_from(
        &self,
        address: &Address,
        pending: u64,
        reread: bool,
    ) -> Result<NonceLease> {
        let nonce = self.take_nonce(address, pending, reread).await?;
        Ok(NonceLease {
            manager: self.clone(),
            address: *address,
            nonce,
            decided: false,
        })
    }

    /// With `reread`, a pending count that looks more than the window behind
    /// is read again from the chain before refusing: under contention the
    /// rounds can outlast it.
    async fn take_nonce(&self, address: &Address, mut pending: u64, reread: bool) -> Result<u64> {
        let list_key = self.released_key(address);
        let counter_key = self.last_used_key(address);
        let mut backoff = Backoff::new(Duration::from_millis(1));
        for _ in 0..ROUNDS {
            // The list before the counter: while the list's version holds,
            // every nonce on it is at most the counter (invariant I), so one
            // above the counter read after it is stale, not a fresh release.
            let raw_list = self.store.get(&list_key).await?;
            let raw_last = self.store.get(&counter_key).await?;
            let list = FreeList::parse(raw_list.as_deref(), &list_key)?;
            let last = parse_last_used(raw_last.as_deref(), &counter_key)?.unwrap_or(-1);
            // Listed nonces the chain has passed are used; those above the
            // counter date from before a reset, and the counter hands them
            // out anyway.
            let mut keep: Vec<u64> = list
                .nonces
                .iter()
                .copied()
                .filter(|&n| n >= pending && i64::try_from(n).is_ok_and(|n| n <= last))
                .collect();
            let swapped = if let Some(&n) = keep.first() {
                keep.remove(0);
                self.store
                    .compare_and_set(&list_key, raw_list.as_deref(), &list.written(&keep), None)
                    .await?
                    .then_some(n)
            } else if !list.nonces.is_empty() {
                // Clear the stale entries first, then take from the counter.
                self.store
                    .compare_and_set(&list_key, raw_list.as_deref(), &list.written(&[]), None)
                    .await?;
                None
            } else {
                let next = match self.next_from_counter(last, pending, address) {
                    Ok(next) => next,
                    Err(e) => {
                        let fresh = if reread {
                            self.chain.pending(address).await?
                        } else {
                            pending
                        };
                        if fresh <= pending {
                            return Err(e);
                        }
                        pending = fresh;
                        continue;
                    }
                };
                self.store
                    .compare_and_set(&counter_key, raw_last.as_deref(), &next.to_string(), None)
                    .await?
                    .then_some(next)
            };
            match swapped {
                Some(n) => return Ok(n),
                None => tokio::time::sleep(backoff.next(Duration::from_millis(50))).await,
            }
        }
        Err(contended(Operation::AssignNonce, "a lease"))
    }

    /// The counter's next nonce: one past the last, or the chain's pending
    /// count when that is higher. Unlike `assign_nonce`, a counter more than
    /// the original's window ahead of the chain is refused, not reset to the
    /// pending count: the nonces in between are held or were sent, and
    /// handing them out again would send two transactions with one nonce.
    fn next_from_counter(&self, last: i64, pending: u64, address: &Address) -> Result<u64> {
        let next = u64::try_from(last.saturating_add(1))
            .unwrap_or(0)
            .max(pending);
        if next - pending > crate::rules::NONCE_WINDOW as u64 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                BACKEND,
                Operation::AssignNonce,
                format!(
                    "the store is {} nonces ahead of the chain for {address} (the chain waits on nonce {pending}); fill the gap (`atomic-store nonce doctor --repair`) or reset the account",
                    next - pending
                ),
            )
            .with_temporary(true));
        }
        Ok(next)
    }

    pub(crate) async fn release_nonce(&self, address: &Address, nonce: u64) -> Result<Released> {
        let counter_key = self.last_used_key(address);
        if self.rewind_from(&counter_key, nonce).await? {
            self.collapse_tail(address, nonce).await?;
            return Ok(Released::Rewound);
        }
        let list_key = self.released_key(address);
        let mut backoff = Backoff::new(Duration::from_millis(1));
        for _ in 0..ROUNDS {
            let raw = self.store.get(&list_key).await?;
            let list = FreeList::parse(raw.as_deref(), &list_key)?;
            let mut nonces = list.nonces.clone();
            if let Err(at) = nonces.binary_search(&nonce) {
                if nonces.len() >= FREE_LIST_LIMIT {
                    self.warn_burned(
                        nonce,
                        "released, but the free list is full; counted as burned",
                    );
                    return Ok(Released::Burned);
                }
                nonces.insert(at, nonce);
            }
            if nonces == list.nonces
                || self
                    .store
                    .compare_and_set(&list_key, raw.as_deref(), &list.written(&nonces), None)
                    .await?
            {
                return Ok(Released::Listed);
            }
            // The top may have come down to this nonce meanwhile.
            if self.rewind_from(&counter_key, nonce).await? {
                self.collapse_tail(address, nonce).await?;
                return Ok(Released::Rewound);
            }
            tokio::time::sleep(backoff.next(Duration::from_millis(50))).await;
        }
        Err(contended(Operation::CompareAndSet, "a release"))
    }

    /// `lastUsed` from `nonce` to `nonce − 1`, if it is still `nonce`.
    async fn rewind_from(&self, counter_key: &str, nonce: u64) -> Result<bool> {
        let previous = nonce as i64 - 1;
        self.store
            .compare_and_set(
                counter_key,
                Some(&nonce.to_string()),
                &previous.to_string(),
                None,
            )
            .await
    }

    /// After a rewind to `top − 1`: while the new top is on the free list,
    /// take it off and rewind past it too, so released nonces at the end of
    /// the range do not stay listed.
    async fn collapse_tail(&self, address: &Address, rewound: u64) -> Result<()> {
        let list_key = self.released_key(address);
        let counter_key = self.last_used_key(address);
        let mut top = rewound;
        for _ in 0..COLLAPSE_STEPS {
            let Some(m) = top.checked_sub(1) else {
                return Ok(());
            };
            let raw = self.store.get(&list_key).await?;
            let list = FreeList::parse(raw.as_deref(), &list_key)?;
            let Ok(at) = list.nonces.binary_search(&m) else {
                return Ok(());
            };
            let mut rest = list.nonces.clone();
            rest.remove(at);
            if !self
                .store
                .compare_and_set(&list_key, raw.as_deref(), &list.written(&rest), None)
                .await?
            {
                return Ok(());
            }
            // m is ours now, as if leased; rewind past it or list it again.
            if !self.rewind_from(&counter_key, m).await? {
                Box::pin(self.release_nonce(address, m)).await?;
                return Ok(());
            }
            top = m;
        }
        Ok(())
    }

    /// Take `nonce` off the free list if it is there.
    pub(super) async fn take_listed(&self, address: &Address, nonce: u64) -> Result<bool> {
        self.edit_list(address, |list| match list.binary_search(&nonce) {
            Ok(at) => {
                list.remove(at);
                true
            }
            Err(_) => false,
        })
        .await
    }

    /// Drop listed nonces below `pending`: the chain has them.
    pub(super) async fn drop_passed(&self, address: &Address, pending: u64) -> Result<()> {
        self.edit_list(address, |list| {
            let before = list.len();
            list.retain(|&n| n >= pending);
            list.len() != before
        })
        .await
        .map(|_| ())
    }

    /// Apply `edit` to the free list by compare-and-set; `edit` says
    /// whether it changed anything.
    pub(super) async fn edit_list(
        &self,
        address: &Address,
        edit: impl Fn(&mut Vec<u64>) -> bool,
    ) -> Result<bool> {
        let key = self.released_key(address);
        let mut backoff = Backoff::new(Duration::from_millis(1));
        for _ in 0..ROUNDS {
            let raw = self.store.get(&key).await?;
            let list = FreeList::parse(raw.as_deref(), &key)?;
            let mut nonces = list.nonces.clone();
            if !edit(&mut nonces) {
                return Ok(false);
            }
            if self
                .store
                .compare_and_set(&key, raw.as_deref(), &list.written(&nonces), None)
                .await?
            {
                return Ok(true);
            }
            tokio::time::sleep(backoff.next(Duration::from_millis(50))).await;
        }
        Err(contended(Operation::CompareAndSet, "a free list edit"))
    }

    pub(crate) fn warn_burned(&self, nonce: u64, why: &str) {
        tracing::warn!(
            target: "atomic_store",
            chain_id = self.chain_id,
            nonce,
            "nonce lease {why}: the chain may wait on this nonce until it is filled"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_list_reads_back_sorted_and_refuses_junk() {
        let empty = FreeList::parse(None, "k").unwrap();
        assert_eq!((empty.version, empty.nonces.len()), (0, 0));
        assert_eq!(empty.written(&[3, 5, 9]), "1|3,5,9");
        let list = FreeList::parse(Some("7|9,3,3,5"), "k").unwrap();
        assert_eq!((list.version, list.nonces.clone()), (7, vec![3, 5, 9]));
        assert_eq!(list.written(&[]), "8|");
        assert!(FreeList::parse(Some("8|"), "k").unwrap().nonces.is_empty());
        for junk in ["3,5", "x|3", "1|3,x", "1|-1", ""] {
            let e = FreeList::parse(Some(junk), "k").err().unwrap();
            assert_eq!(e.kind(), ErrorKind::NotAnInteger, "{junk}");
        }
    }
}
