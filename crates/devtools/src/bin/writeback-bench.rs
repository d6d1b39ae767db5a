//! `cargo xtask bench writeback`: password resets against one Samba DC, two ways, interleaved so
//! that machine noise falls on both alike:
//!
//! * direct: one `unicodePwd` modify on a warm LDAPS connection (the directory crate, bound as the
//!   agent's service account): the floor any writeback product sits on;
//! * end to end: the admin API over HTTPS (kept alive) -> cloud relay -> agent process over WSS
//!   -> the agent's lookups, policy check and the same modify.
//!
//! Only the API call is timed; that it was audited is checked after the clock stops. Before its
//! last line it says where the end-to-end time goes, per request from the cloud's and the
//! agent's logs: the agent's work (its lookups, policy check and the modify), the relay (sealing,
//! the WebSocket both ways), and the cloud's API around the dispatch: its checks and the synced
//! user's lookup before, the audit row after, and the rest (HTTPS, the session, JSON).
//!
//! It ends with one line: `writeback direct_p50_ms=… e2e_p50_ms=… ratio_p50=… direct_p99_ms=…
//! e2e_p99_ms=… ratio_p99=…`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use secrecy::SecretString;
use writeback_devtools::{argument, percentile_ms};
use writeback_directory::{Directory, ResetOptions};
use writeback_proto::api::ResetPasswordRequest;
use writeback_proto::operation::UserRef;
use writeback_proto::result::ResultCode;
use writeback_proto::sync::ObjectAnchor;
use writeback_testkit::logs::{strong_password, unique_user};
use writeback_testkit::{NewUser, Stack};

fn summary(label: &str, samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let (p50, p99) = (percentile_ms(samples, 0.50), percentile_ms(samples, 0.99));
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
        / samples.len().max(1) as f64;
    println!(
        "{label:<26} n={:<4} p50={p50:>7.2} ms  p99={p99:>7.2} ms  mean={mean:>7.2} ms  min={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        percentile_ms(samples, 0.0),
        percentile_ms(samples, 1.0),
    );
    (p50, p99)
}

#[tokio::main]
async fn main() -> Result<()> {
    let iterations = argument("--iterations", 200)?;
    let warmup = argument("--warmup", 10)?;
    println!(
        "writeback bench: {iterations} resets each way after {warmup} warm-up rounds, interleaved"
    );

    let mut stack = Stack::start().await?;
    let dc = stack.dc.clone();
    let direct_user = unique_user("benchdirect");
    let e2e_user = unique_user("benche2e");
    let mut admin = dc.admin().await?;
    for name in [&direct_user, &e2e_user] {
        admin
            .create_user(&NewUser::new(name, &strong_password()))
            .await?;
    }

    let directory = dc.service_directory()?;
    let account = directory
        .find_user(&UserRef::logon_name(&direct_user)?)
        .await?;

    // The cloud sends the agent a synced user's anchor, so the agent finds users by objectGUID.
    let direct_anchor = UserRef::Anchor(ObjectAnchor::from_bytes(
        account.object_guid.context("the user has an objectGUID")?,
    ));
    let mut direct = Vec::with_capacity(iterations);
    let mut lookups = Vec::with_capacity(iterations);
    let mut end_to_end = Vec::with_capacity(iterations);
    let mut measured = Vec::with_capacity(iterations);
    for round in 0..warmup + iterations {
        let password = SecretString::from(strong_password());
        let started = Instant::now();
        directory
            .reset_password(&account, &password, ResetOptions::default())
            .await?;
        let direct_time = started.elapsed();

        // What the agent reads before its modify, done the same way: the user and the domain
        // policy at once on the one connection.
        let started = Instant::now();
        let (found, policy) = tokio::join!(
            directory.find_user(&direct_anchor),
            directory.domain_policy()
        );
        found?;
        policy?;
        let lookup_time = started.elapsed();

        let request = ResetPasswordRequest {
            new_password: SecretString::from(strong_password()),
            must_change: false,
            unlock: false,
        };
        let started = Instant::now();
        let response = stack
            .client
            .reset_password(&stack.directory, &e2e_user, &request, None)
            .await?;
        let e2e_time = started.elapsed();
        ensure!(
            response.result == ResultCode::Success,
            "end-to-end reset failed: {}",
            response.message
        );
        stack
            .assert_audited(&response, "reset_password", &e2e_user)
            .await?;

        if round >= warmup {
            direct.push(direct_time);
            lookups.push(lookup_time);
            end_to_end.push(e2e_time);
            measured.push((response.request_id.to_string(), e2e_time));
        }
    }
    ensure!(
        dc.bind_as(&e2e_user, &stack_last_password(&stack, &e2e_user).await?)
            .await?
            .is_ok(),
        "the last end-to-end reset did not land"
    );

    let (direct_p50, direct_p99) = summary("direct LDAP reset", &mut direct);
    let (e2e_p50, e2e_p99) = summary("end-to-end admin API reset", &mut end_to_end);
    where_the_time_goes(&stack, &measured)?;
    summary("  of which lookups (direct)", &mut lookups);

    stack.kill_agent().await?;
    let mut unavailable = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let response = stack
            .reset(&e2e_user, &strong_password(), false, false)
            .await?;
        unavailable.push(started.elapsed());
        ensure!(
            response.result == ResultCode::AgentUnavailable,
            "expected agent unavailable, got {:?}",
            response.result
        );
    }
    summary("agent unavailable answer", &mut unavailable);

    println!(
        "writeback direct_p50_ms={direct_p50:.2} e2e_p50_ms={e2e_p50:.2} ratio_p50={:.2} direct_p99_ms={direct_p99:.2} e2e_p99_ms={e2e_p99:.2} ratio_p99={:.2}",
        e2e_p50 / direct_p50,
        e2e_p99 / direct_p99
    );
    Ok(())
}

/// `field`'s number in each JSON log line of `text` with `message`, by request id.
fn logged_microseconds(text: &str, message: &str, field: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == message)
        .filter_map(|line| {
            let fields = &line["fields"];
            Some((
                fields["request_id"].as_str()?.to_owned(),
                fields[field].as_u64()?,
            ))
        })
        .collect()
}

/// The p50 of each hop of the measured requests: the agent's own time, the relay's time around
/// it, and the cloud's API around the relay.
fn where_the_time_goes(stack: &Stack, measured: &[(String, Duration)]) -> Result<()> {
    let cloud_log = std::fs::read_to_string(writeback_testkit::logs::own_log()?)?;
    let dispatch = logged_microseconds(&cloud_log, "operation finished", "dispatch_us");
    let before_dispatch =
        logged_microseconds(&cloud_log, "operation finished", "before_dispatch_us");
    let audit = logged_microseconds(&cloud_log, "operation finished", "audit_us");
    let agent = logged_microseconds(&stack.agent_log(), "operation done", "elapsed_us");
    let mut agent_times = Vec::new();
    let mut relay_times = Vec::new();
    let mut api_times = Vec::new();
    let mut before_dispatch_times = Vec::new();
    let mut audit_times = Vec::new();
    let mut http_times = Vec::new();
    for (request_id, total) in measured {
        let (Some(dispatch), Some(agent), Some(before_dispatch), Some(audit)) = (
            dispatch.get(request_id),
            agent.get(request_id),
            before_dispatch.get(request_id),
            audit.get(request_id),
        ) else {
            continue;
        };
        let [dispatch, agent, before_dispatch, audit] =
            [dispatch, agent, before_dispatch, audit].map(|us| Duration::from_micros(*us));
        agent_times.push(agent);
        relay_times.push(dispatch.saturating_sub(agent));
        api_times.push(total.saturating_sub(dispatch));
        before_dispatch_times.push(before_dispatch);
        audit_times.push(audit);
        http_times.push(
            total
                .saturating_sub(dispatch)
                .saturating_sub(before_dispatch)
                .saturating_sub(audit),
        );
    }
    ensure!(
        agent_times.len() == measured.len(),
        "only {} of {} requests were found in the logs",
        agent_times.len(),
        measured.len()
    );
    println!("where the end-to-end time goes, per request:");
    summary("  agent (lookups + modify)", &mut agent_times);
    summary("  relay (seal, WSS, open)", &mut relay_times);
    summary("  cloud API around relay", &mut api_times);
    summary("    checks, user (store)", &mut before_dispatch_times);
    summary("    audit row (store)", &mut audit_times);
    summary("    HTTPS, session, JSON", &mut http_times);
    Ok(())
}

/// Resets the user once more through the product and returns the password, to prove the
/// measured path really lands in the directory.
async fn stack_last_password(stack: &Stack, user: &str) -> Result<String> {
    let password = strong_password();
    let response = stack.reset(user, &password, false, false).await?;
    ensure!(
        response.result == ResultCode::Success,
        "{}",
        response.message
    );
    Ok(password)
}
