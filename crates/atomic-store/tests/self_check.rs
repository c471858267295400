//! The suite tests itself: the linearizability checker catches the
//! histories it claims to, and every check fails on a store that breaks
//! exactly the promise it is named for (stores in `support::broken`).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use atomic_store::conformance::{self, Store};
use atomic_store::ReleaseOutcome;
use support::broken::{broken, recipe_checks, Flaw};
use support::faults::{linearizable_under_faults, Expect, Fault, Phase};
use support::lincheck::{
    check, check_counter, check_key, resent_releases_unknown, Call, Op, Recorder, Ret,
};

// ---- the checker on hand-made histories ----

fn done(call: Call, ret: Ret, invoke: u64, complete: u64) -> Op {
    Op::known("k", 0, call, ret, invoke, complete)
}

fn maybe(call: Call, invoke: u64) -> Op {
    Op::unknown("k", 0, call, invoke)
}

fn value(v: Option<&str>) -> Ret {
    Ret::Value(v.map(str::to_owned))
}

fn set(v: &str) -> Call {
    Call::Set(v.to_owned())
}

fn acquired(id: &str, token: u64) -> Ret {
    Ret::Acquired(Some((id.to_owned(), token)))
}

fn release(id: &str) -> Call {
    Call::Release(id.to_owned())
}

fn assert_fails(history: &[Op], why: &str) {
    let verdict = check_key(history);
    assert!(verdict.is_err(), "{why}: the checker accepted {history:#?}");
}

#[test]
fn overlapping_incrs_may_return_in_either_order() {
    let h = [
        done(Call::Incr, Ret::Int(2), 1, 4),
        done(Call::Incr, Ret::Int(1), 2, 3),
        done(Call::Incr, Ret::Int(3), 5, 6),
    ];
    check_key(&h).unwrap();
}

#[test]
fn an_incr_value_returned_twice_fails() {
    assert_fails(
        &[
            done(Call::Incr, Ret::Int(1), 1, 2),
            done(Call::Incr, Ret::Int(1), 3, 4),
        ],
        "duplicated value",
    );
    // Also when the two calls overlap.
    assert_fails(
        &[
            done(Call::Incr, Ret::Int(1), 1, 4),
            done(Call::Incr, Ret::Int(1), 2, 3),
        ],
        "duplicated value, concurrent calls",
    );
}

#[test]
fn incr_values_against_real_time_order_fail() {
    assert_fails(
        &[
            done(Call::Incr, Ret::Int(2), 1, 2),
            done(Call::Incr, Ret::Int(1), 3, 4),
        ],
        "a later call got the smaller value",
    );
}

#[test]
fn a_stale_read_fails() {
    assert_fails(
        &[
            done(set("a"), Ret::Done, 1, 2),
            done(set("b"), Ret::Done, 3, 4),
            done(Call::Get, value(Some("a")), 5, 6),
        ],
        "stale read",
    );
}

#[test]
fn a_read_during_a_write_may_see_either_value() {
    for seen in ["a", "b"] {
        check_key(&[
            done(set("a"), Ret::Done, 1, 2),
            done(set("b"), Ret::Done, 3, 6),
            done(Call::Get, value(Some(seen)), 4, 5),
        ])
        .unwrap();
    }
    assert_fails(
        &[
            done(set("a"), Ret::Done, 1, 2),
            done(set("b"), Ret::Done, 3, 6),
            done(Call::Get, value(Some("c")), 4, 5),
        ],
        "a value nobody wrote",
    );
}

#[test]
fn two_lock_holders_fail() {
    assert_fails(
        &[
            done(Call::Acquire, acquired("x", 1), 1, 2),
            done(Call::Acquire, acquired("y", 2), 3, 4),
        ],
        "two holders one after the other",
    );
    assert_fails(
        &[
            done(Call::Acquire, acquired("x", 1), 1, 4),
            done(Call::Acquire, acquired("y", 2), 2, 3),
        ],
        "two holders at once",
    );
    // With a release in between, it is a hand-over.
    check_key(&[
        done(Call::Acquire, acquired("x", 1), 1, 2),
        done(release("x"), Ret::Released(ReleaseOutcome::Released), 3, 4),
        done(Call::Acquire, acquired("y", 2), 5, 6),
        done(Call::Acquire, Ret::Acquired(None), 7, 8),
    ])
    .unwrap();
}

#[test]
fn a_release_by_another_id_must_say_so() {
    assert_fails(
        &[
            done(Call::Acquire, acquired("x", 1), 1, 2),
            done(release("y"), Ret::Released(ReleaseOutcome::Released), 3, 4),
        ],
        "released by a stranger",
    );
    check_key(&[
        done(Call::Acquire, acquired("x", 1), 1, 2),
        done(
            release("y"),
            Ret::Released(ReleaseOutcome::HeldByOther),
            3,
            4,
        ),
        done(release("x"), Ret::Released(ReleaseOutcome::Released), 5, 6),
        done(release("x"), Ret::Released(ReleaseOutcome::NotHeld), 7, 8),
    ])
    .unwrap();
}

#[test]
fn a_resent_release_is_told_apart_from_other_violations() {
    // The holder's release reports NotHeld (its first attempt released the
    // lock, a resend found it gone): not linearizable, but explained by the
    // resend alone.
    let h = [
        done(Call::Acquire, acquired("x", 1), 1, 2),
        done(release("x"), Ret::Released(ReleaseOutcome::NotHeld), 3, 6),
        done(Call::Acquire, acquired("y", 2), 4, 5),
    ];
    assert_fails(&h, "a holder's release answered NotHeld");
    check_key(&resent_releases_unknown(&h)).unwrap();
    // Two holders are not explained by any resend.
    let h = [
        done(Call::Acquire, acquired("x", 1), 1, 2),
        done(release("x"), Ret::Released(ReleaseOutcome::NotHeld), 7, 8),
        done(Call::Acquire, acquired("y", 2), 3, 4),
    ];
    assert!(check_key(&resent_releases_unknown(&h)).is_err());
}

#[test]
fn fencing_tokens_must_rise() {
    assert_fails(
        &[
            done(Call::Acquire, acquired("x", 5), 1, 2),
            done(release("x"), Ret::Released(ReleaseOutcome::Released), 3, 4),
            done(Call::Acquire, acquired("y", 3), 5, 6),
        ],
        "a token below the last one",
    );
}

#[test]
fn an_unknown_outcome_explains_a_gap_and_nothing_else_does() {
    let mut h = vec![
        done(Call::Incr, Ret::Int(1), 1, 2),
        done(Call::Incr, Ret::Int(3), 4, 5),
    ];
    assert_fails(&h, "a skipped value with no unknown outcome");
    h.push(maybe(Call::Incr, 3));
    check_key(&h).unwrap();
}

#[test]
fn an_unknown_outcome_cannot_take_effect_before_it_was_invoked() {
    assert_fails(
        &[
            done(Call::Incr, Ret::Int(1), 1, 2),
            done(Call::Get, value(Some("2")), 3, 4),
            maybe(Call::Incr, 5),
        ],
        "a read saw a call that had not started",
    );
}

#[test]
fn an_unknown_outcome_applies_once_or_never() {
    let mut h = vec![
        maybe(Call::Incr, 1),
        done(Call::Get, value(None), 2, 3),
        done(Call::Get, value(Some("1")), 4, 5),
    ];
    check_key(&h).unwrap();
    h.push(done(Call::Get, value(None), 6, 7));
    assert_fails(&h, "an applied call undone");
    assert_fails(
        &[
            maybe(Call::Incr, 1),
            done(Call::Get, value(Some("2")), 2, 3),
        ],
        "one unknown call applied twice",
    );
}

#[test]
fn compare_and_set_has_one_winner_per_value() {
    let cas = |expected: Option<&str>, new: &str| Call::Cas {
        expected: expected.map(str::to_owned),
        new: new.to_owned(),
    };
    assert_fails(
        &[
            done(cas(None, "a"), Ret::Swapped(true), 1, 4),
            done(cas(None, "b"), Ret::Swapped(true), 2, 3),
        ],
        "two winners on an absent key",
    );
    check_key(&[
        done(cas(None, "a"), Ret::Swapped(true), 1, 4),
        done(cas(None, "b"), Ret::Swapped(false), 2, 3),
        done(cas(Some("a"), "c"), Ret::Swapped(true), 5, 6),
        done(Call::Get, value(Some("c")), 7, 8),
    ])
    .unwrap();
}

#[test]
fn assign_nonce_follows_the_rule() {
    check_key(&[
        done(Call::AssignNonce(0), Ret::Nonce(0), 1, 2),
        done(Call::AssignNonce(0), Ret::Nonce(1), 3, 4),
        done(Call::AssignNonce(9), Ret::Nonce(9), 5, 6),
    ])
    .unwrap();
    assert_fails(
        &[
            done(Call::AssignNonce(0), Ret::Nonce(0), 1, 2),
            done(Call::AssignNonce(0), Ret::Nonce(0), 3, 4),
        ],
        "a nonce handed out twice",
    );
}

#[test]
fn keys_are_checked_apart() {
    let on = |key: &str, v: i64, at: u64| Op::known(key, 0, Call::Incr, Ret::Int(v), at, at + 1);
    check(&[on("a", 1, 1), on("b", 1, 3), on("a", 2, 5)]).unwrap();
    assert!(check(&[on("a", 1, 1), on("b", 1, 3), on("a", 1, 5)]).is_err());
}

#[test]
fn the_counter_check_counts_gaps_against_unknown_outcomes() {
    let h = |values: &[i64], unknown: usize| {
        let mut ops: Vec<Op> = values
            .iter()
            .enumerate()
            .map(|(i, v)| done(Call::Incr, Ret::Int(*v), i as u64 * 2 + 1, i as u64 * 2 + 2))
            .collect();
        ops.extend((0..unknown).map(|i| maybe(Call::Incr, 100 + i as u64)));
        ops
    };
    assert!(check_counter(&h(&[1, 2, 2], 0), "k").is_err());
    assert!(check_counter(&h(&[1, 3], 0), "k").is_err());
    assert_eq!(check_counter(&h(&[1, 3], 1), "k").unwrap(), (vec![1, 3], 1));
    assert!(check_counter(&h(&[1, 4], 1), "k").is_err());
}

/// A long history recorded from real concurrent tasks on a correct store
/// passes, in reasonable time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_history_of_a_correct_store_passes() {
    let store = atomic_store::open("memory://").unwrap();
    let recorder = Arc::new(Recorder::new());
    let mut tasks = Vec::new();
    for p in 0..8 {
        let (store, recorder) = (Arc::clone(&store), Arc::clone(&recorder));
        tasks.push(tokio::spawn(async move {
            for n in 0..250 {
                match p % 4 {
                    0 => {
                        recorder.incr(&store, p, "counter").await.unwrap();
                    }
                    1 => {
                        let seen = recorder.get(&store, p, "register").await.unwrap();
                        let new = format!("p{p}-{n}");
                        recorder
                            .cas(&store, p, "register", seen.as_deref(), &new)
                            .await
                            .unwrap();
                    }
                    2 => {
                        if let Some(lock) = recorder
                            .acquire(&store, p, "lock", Duration::from_secs(60))
                            .await
                            .unwrap()
                        {
                            recorder.release(&store, p, "lock", &lock).await.unwrap();
                        }
                    }
                    _ => {
                        recorder.assign_nonce(&store, p, "nonce", 0).await.unwrap();
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let history = recorder.history();
    assert!(history.len() >= 8 * 250, "{} operations", history.len());
    tokio::task::spawn_blocking(move || check(&history))
        .await
        .unwrap()
        .unwrap();
}

// ---- every check against every broken store ----

/// The checks that must fail on each broken store: named for the promise
/// it breaks.
fn expected(flaw: Flaw) -> &'static [&'static str] {
    match flaw {
        Flaw::Nothing => &[],
        Flaw::ResendsAfterLostReply => &[
            "incr_counts_from_one",
            "assign_nonce_rule",
            "concurrent_nonces_are_unique",
            "fault_harness",
        ],
        Flaw::GrantsEveryLock => &[
            "lock_acquire_release",
            "concurrent_locks_exclude",
            "recipe_excludes_a_barging_client",
            "fault_harness",
        ],
        Flaw::ReleasesAnyId => &["lock_acquire_release"],
        Flaw::NeverExpires => &["values_expire", "expired_locks_pass_to_a_new_owner"],
        Flaw::ForgetsFencingOnDelete => &["fencing_tokens_always_rise"],
        Flaw::DropsOverwrites => &["set_get_delete"],
        Flaw::PurgeKeepsFencing => &["purge_forgets_a_key"],
        Flaw::KeepsDeadWaiters => &["recipe_skips_a_crashed_waiter"],
        Flaw::CasIgnoresExpected => &[
            "compare_and_set_semantics",
            "leases_stay_unique",
            "fault_harness",
        ],
        Flaw::CasNotAtomic => &["leases_stay_unique"],
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// The fault harness with no fault at all (a memory store has no network):
/// its history checks alone.
async fn fault_harness(store: &Store) -> Result<(), String> {
    let store = Arc::clone(store);
    let mut phase = Phase::new(
        "no fault",
        Fault::Nothing,
        Duration::from_secs(1),
        &[Expect::Successes],
    );
    phase.settle = Duration::from_millis(500);
    tokio::spawn(async move {
        linearizable_under_faults(&store, None, None, &[phase]).await;
    })
    .await
    .map_err(panic_message)
}

/// Runs every check on a store with `flaw`: which failed, and why.
async fn failing_checks(flaw: Flaw) -> Vec<(String, String)> {
    let store = broken(flaw);
    let mut failed = Vec::new();
    for outcome in conformance::run_all(&store).await.outcomes {
        if let Err(e) = outcome.result {
            failed.push((outcome.name.to_owned(), e.to_string()));
        }
    }
    for (name, run) in recipe_checks() {
        let owned = Arc::clone(&store);
        let result = tokio::spawn(async move { run(&owned).await })
            .await
            .map_err(panic_message)
            .and_then(|r| r);
        if let Err(e) = result {
            failed.push((name.to_owned(), e));
        }
    }
    if let Err(e) = fault_harness(&store).await {
        failed.push(("fault_harness".to_owned(), e));
    }
    failed
}

async fn caught(flaw: Flaw) {
    let failed = failing_checks(flaw).await;
    for (name, why) in &failed {
        let why: String = why.chars().take(300).collect();
        eprintln!("{flaw:?}: {name} failed: {why}");
    }
    let names: BTreeSet<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
    let missed: Vec<&str> = expected(flaw)
        .iter()
        .copied()
        .filter(|n| !names.contains(n))
        .filter(|n| cfg!(feature = "nonce") || *n != "leases_stay_unique")
        .collect();
    assert!(
        missed.is_empty(),
        "a store that breaks {flaw:?} passed {missed:?}, the checks named for that promise"
    );
    if flaw == Flaw::Nothing {
        assert!(
            failed.is_empty(),
            "the unbroken wrapper failed checks: {names:?}"
        );
    }
}

macro_rules! caught {
    ($($name:ident: $flaw:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            caught(Flaw::$flaw).await;
        }
    )*};
}

caught! {
    the_unbroken_wrapper_passes_every_check: Nothing,
    a_resent_incr_is_caught: ResendsAfterLostReply,
    a_store_granting_every_lock_is_caught: GrantsEveryLock,
    a_release_by_any_id_is_caught: ReleasesAnyId,
    a_store_that_never_expires_is_caught: NeverExpires,
    a_fencing_counter_forgotten_on_delete_is_caught: ForgetsFencingOnDelete,
    a_dropped_write_reported_as_done_is_caught: DropsOverwrites,
    a_purge_that_keeps_the_fencing_token_is_caught: PurgeKeepsFencing,
    a_lock_handed_to_a_dead_waiter_is_caught: KeepsDeadWaiters,
    a_compare_and_set_that_ignores_its_expected_value_is_caught: CasIgnoresExpected,
    a_compare_and_set_that_is_a_read_then_a_write_is_caught: CasNotAtomic,
}
