//! Who may guess, and be sent codes, how often. Every guarded step reserves its attempt in the
//! store before it runs ([`Store::reserve`]), in three buckets at once: the account, the client's
//! address and everyone. A step whose attempt turns out not to count (a right answer, where only
//! wrong ones are limited) releases it. An account that uses up its allowance is blocked for
//! `block_hours`.
//!
//! Portal sign-ins bind against the directory, which counts wrong passwords towards its own
//! lockout; their allowance per account is therefore also kept below the strictest lockout the
//! agent reports ([`sign_in_limit`]), so that Writeback alone never locks an account out.

use std::time::Duration;

use writeback_proto::frame::LockoutPolicy;
use writeback_proto::time::UnixMillis;
use writeback_store::{Limit, Reservation, Reserved, Store, StoreError};

use crate::config::{LimitsConfig, RateLimit};

/// What a guarded step spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// Checking a one-time code, an authenticator code or security answers.
    Proof,
    /// A portal sign-in: a bind as the user.
    SignIn,
    /// Mailing or texting a one-time code.
    Code,
    /// An administrator's password or authenticator code.
    Administrator,
}

impl Guarded {
    fn prefix(self) -> &'static str {
        match self {
            Self::Proof | Self::SignIn => "proof",
            Self::Code => "code",
            Self::Administrator => "admin",
        }
    }
}

/// Which allowance was used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    Account,
    Address,
    Everyone,
}

/// The allowance per account for portal sign-ins under `lockout`: no more wrong passwords than
/// one short of the threshold, over a window long enough that the directory cannot have
/// forgotten the first of them. A lockout counts wrong passwords each within its observation
/// window of the one before, so `threshold` of them span at most `threshold - 1` windows; a
/// window of that length holding at most `threshold - 1` attempts can never contain them all.
/// Without a report, one attempt per window: the one guess no threshold above one can punish.
pub fn sign_in_limit(base: RateLimit, lockout: Option<LockoutPolicy>) -> RateLimit {
    match lockout {
        Some(LockoutPolicy { threshold: 0, .. }) => base,
        Some(lockout) => {
            let below = u64::from(lockout.threshold - 1);
            RateLimit::new(
                base.max.min(below),
                base.window_seconds
                    .max(below.saturating_mul(lockout.observation_window_seconds)),
            )
        }
        None => RateLimit::new(base.max.min(1), base.window_seconds),
    }
}

fn limit(bucket: String, rate: RateLimit) -> Limit {
    Limit::new(bucket, rate.max, rate.window())
}

fn block_bucket(account: &str) -> String {
    format!("block:{account}")
}

/// The limits of one configuration over one store.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    store: &'a Store,
    config: &'a LimitsConfig,
}

impl<'a> Limits<'a> {
    pub fn new(store: &'a Store, config: &'a LimitsConfig) -> Self {
        Self { store, config }
    }

    fn rates(&self, guarded: Guarded) -> (RateLimit, RateLimit, Option<RateLimit>) {
        let config = self.config;
        match guarded {
            Guarded::Proof | Guarded::SignIn => (
                config.proof_failures_per_account,
                config.proof_failures_per_address,
                Some(config.proof_failures_global),
            ),
            Guarded::Code => (
                config.codes_per_account,
                config.codes_per_address,
                Some(config.codes_global),
            ),
            // A global ceiling on administrator sign-ins would let anyone lock every
            // administrator out; per account and per address is enough for a handful of them.
            Guarded::Administrator => (
                config.admin_failures_per_account,
                config.admin_failures_per_address,
                None,
            ),
        }
    }

    /// The limits a step of `guarded` for `account` from `address` must fit in, each with the
    /// allowance it stands for.
    fn limits(
        &self,
        guarded: Guarded,
        account: &str,
        address: Option<&str>,
        lockout: Option<LockoutPolicy>,
    ) -> Vec<(Limit, Exhausted)> {
        let prefix = guarded.prefix();
        let (per_account, per_address, global) = self.rates(guarded);
        let mut limits = vec![(
            limit(format!("{prefix}:account:{account}"), per_account),
            Exhausted::Account,
        )];
        if guarded == Guarded::SignIn {
            limits.push((
                limit(
                    format!("sign-in:account:{account}"),
                    sign_in_limit(per_account, lockout),
                ),
                Exhausted::Account,
            ));
        }
        if let Some(address) = address {
            limits.push((
                limit(format!("{prefix}:address:{address}"), per_address),
                Exhausted::Address,
            ));
        }
        if let Some(global) = global {
            limits.push((limit(format!("{prefix}:all"), global), Exhausted::Everyone));
        }
        limits
    }

    /// Holds one attempt of `guarded` for `account` from `address`, or says which allowance is
    /// used up (holding nothing). `lockout` matters to sign-ins only.
    pub async fn reserve(
        &self,
        guarded: Guarded,
        account: &str,
        address: Option<&str>,
        lockout: Option<LockoutPolicy>,
        now: UnixMillis,
    ) -> Result<Result<Reservation, Exhausted>, StoreError> {
        let limits = self.limits(guarded, account, address, lockout);
        let wanted: Vec<Limit> = limits.iter().map(|(limit, _)| limit.clone()).collect();
        Ok(match self.store.reserve(&wanted, now).await? {
            Reserved::Granted(reservation) => Ok(reservation),
            Reserved::Refused(full) => Err(limits
                .iter()
                .find(|(limit, _)| limit.bucket == full.bucket)
                .map_or(Exhausted::Everyone, |(_, exhausted)| *exhausted)),
        })
    }

    /// The attempt did not count.
    pub async fn release(&self, reservation: Reservation) -> Result<(), StoreError> {
        self.store.release(reservation).await
    }

    /// Whether `account` has used up its allowance of `guarded` now, counting attempts held.
    pub async fn used_up(
        &self,
        guarded: Guarded,
        account: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (per_account, _, _) = self.rates(guarded);
        let held = self
            .store
            .count_in_bucket(
                &format!("{}:account:{account}", guarded.prefix()),
                per_account.window(),
                now,
            )
            .await?;
        Ok(held >= per_account.max)
    }

    fn block_time(&self) -> Duration {
        Duration::from_secs(self.config.block_hours.max(1) * 3600)
    }

    pub async fn is_blocked(&self, account: &str, now: UnixMillis) -> Result<bool, StoreError> {
        Ok(self
            .store
            .count_in_bucket(&block_bucket(account), self.block_time(), now)
            .await?
            > 0)
    }

    /// Blocks self-service for `account` for `block_hours`.
    pub async fn block(&self, account: &str, now: UnixMillis) -> Result<(), StoreError> {
        self.store
            .record_in_bucket(&block_bucket(account), now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: RateLimit = RateLimit::new(5, 3600);

    #[test]
    fn sign_ins_stay_below_the_lockout_threshold() {
        let lockout = |threshold, window| {
            Some(LockoutPolicy {
                threshold,
                observation_window_seconds: window,
            })
        };
        assert_eq!(sign_in_limit(BASE, lockout(0, 1800)), BASE);
        assert_eq!(sign_in_limit(BASE, lockout(10, 60)), BASE);
        assert_eq!(
            sign_in_limit(BASE, lockout(3, 1800)),
            RateLimit::new(2, 3600)
        );
        assert_eq!(
            sign_in_limit(BASE, lockout(4, 7200)),
            RateLimit::new(3, 3 * 7200)
        );
        assert_eq!(sign_in_limit(BASE, lockout(1, 1800)).max, 0);
        assert_eq!(sign_in_limit(BASE, None), RateLimit::new(1, 3600));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// The directory's count of wrong passwords after `attempts` (seconds, ascending): it goes
        /// on from the last one when the new one is within the window, and starts again otherwise.
        fn directory_count(attempts: &[u64], window: u64) -> u32 {
            let mut count = 0;
            let mut last: Option<u64> = None;
            let mut highest = 0;
            for at in attempts {
                count = match last {
                    Some(last) if at - last < window => count + 1,
                    _ => 1,
                };
                highest = highest.max(count);
                last = Some(*at);
            }
            highest
        }

        proptest! {
            /// Whatever the timing of the attempts the portal lets through, the directory's count
            /// never reaches its threshold.
            #[test]
            fn no_admitted_sequence_of_sign_ins_locks_an_account(
                threshold in 1u32..8,
                window in 1u64..5000,
                gaps in proptest::collection::vec(0u64..20_000, 1..60),
            ) {
                let lockout = LockoutPolicy { threshold, observation_window_seconds: window };
                let limit = sign_in_limit(BASE, Some(lockout));
                let mut admitted: Vec<u64> = Vec::new();
                let mut now = 0;
                for gap in gaps {
                    now += gap;
                    let recent = admitted
                        .iter()
                        .filter(|at| now - **at < limit.window_seconds)
                        .count() as u64;
                    if recent < limit.max {
                        admitted.push(now);
                    }
                }
                prop_assert!(directory_count(&admitted, window) < threshold);
            }
        }
    }
}
