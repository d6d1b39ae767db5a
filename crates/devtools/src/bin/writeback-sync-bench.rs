//! `cargo xtask bench sync`: directory sync against one Samba DC holding N users (default 20,000,
//! loaded straight into the DC's database once, then restored from a snapshot of the DC's files
//! kept under `target/bench-domains`), measured side by side with its floor. The DC keeps its
//! database in LMDB, as Samba recommends for large domains, so the agent's search for changes is
//! an index lookup there (with Samba's default TDB it reads the whole directory each time).
//!
//! * raw search: the same paged search the agent makes (the same OU, and the directory crate's own
//!   filter, attributes, control and page size), done directly over LDAPS as the service account,
//!   every entry read and dropped;
//! * full sync: a full resync requested through the admin API, until the cloud has stored every
//!   user and the cursor (agent search, batching, WebSocket, SQLite).
//!
//! Raw search and full sync alternate, three rounds each, and the medians are compared. Then the
//! delta lag: a user's display name is changed at a random moment and the time until the cloud
//! holds the new value is measured, many times: first as the agent runs by default (polled by
//! update sequence number), then with change notification turned on (the DC reports changes,
//! the poll goes on beside it), then read with DirSync once the service account holds
//! Replicating Directory Changes.
//!
//! It ends with one line, whose delta lags are those of the default, beside notification's:
//! `sync users=… full_s=… raw_search_s=… ratio=… delta_lag_p50_ms=… delta_lag_p99_ms=…
//! notified_lag_p50_ms=… notified_lag_p99_ms=…`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use writeback_devtools::{argument, nearest_rank};
use writeback_directory::{FULL_SYNC_FILTER, SYNC_ATTRIBUTES, SYNC_PAGE_SIZE, extended_dn_control};
use writeback_proto::sync::SyncPhase;
use writeback_proto::time::UnixMillis;
use writeback_testkit::domain_controller::{BASE_DN, SERVICE_ACCOUNT};
use writeback_testkit::stack::StackOptions;
use writeback_testkit::{DomainController, Stack};

const ROUNDS: usize = 3;

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    nearest_rank(sorted, fraction).unwrap_or(f64::NAN)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    percentile(samples, 0.5)
}

/// A small generator for the moments of the delta changes; seeded from the clock.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// The agent's full-sync search, done directly. Returns the number of entries read.
async fn raw_search(dc: &DomainController, base: &str) -> Result<usize> {
    let settings = LdapConnSettings::new().set_no_tls_verify(true);
    let (driver, mut ldap) = LdapConnAsync::with_settings(settings, &dc.ldaps_url()).await?;
    ldap3::drive!(driver);
    ldap.simple_bind(
        &dc.user_principal_name(SERVICE_ACCOUNT),
        &dc.service_account_password,
    )
    .await?
    .success()?;
    let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(SYNC_PAGE_SIZE)),
    ];
    let mut stream = ldap
        .with_controls(vec![extended_dn_control()])
        .streaming_search_with(
            adapters,
            base,
            Scope::Subtree,
            FULL_SYNC_FILTER,
            SYNC_ATTRIBUTES.to_vec(),
        )
        .await?;
    let mut count = 0;
    while let Some(entry) = stream.next().await? {
        let entry = SearchEntry::construct(entry);
        count += usize::from(!entry.dn.is_empty());
    }
    stream.finish().await.success()?;
    let _ = ldap.unbind().await;
    Ok(count)
}

/// Requests a full resync and waits until the cloud has completed it with `users` users. Polls
/// only the cursor (one row): counting 20,000 rows every few milliseconds would compete with the
/// sync for the CPU.
async fn full_sync(stack: &Stack, users: u64) -> Result<f64> {
    let store = &stack.cloud.as_ref().context("cloud running")?.state.store;
    let before = generation(store, stack).await?;
    let started = Instant::now();
    let response = stack.client.request_full_sync(&stack.directory).await?;
    ensure!(response.started, "no agent took the full sync request");
    loop {
        let cursor = store.sync_start(&stack.directory).await?.cursor;
        if let Some(cursor) = cursor
            && cursor.generation > before
            && matches!(cursor.phase, SyncPhase::Delta { .. })
        {
            let elapsed = started.elapsed().as_secs_f64();
            let stored = store
                .sync_status(&stack.directory, UnixMillis::now())
                .await?
                .users;
            ensure!(stored == users, "the full sync stored {stored} users");
            return Ok(elapsed);
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the full sync did not complete");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn generation(store: &writeback_store::Store, stack: &Stack) -> Result<u64> {
    Ok(store
        .sync_start(&stack.directory)
        .await?
        .cursor
        .map_or(0, |cursor| cursor.generation))
}

/// Changes a random user's display name at a random moment, `changes` times, and returns the
/// sorted times until the cloud held each new value, in milliseconds.
async fn delta_lags(
    dc: &DomainController,
    stack: &Stack,
    bench_ou: &str,
    users: usize,
    changes: usize,
) -> Result<Vec<f64>> {
    let store = &stack.cloud.as_ref().context("cloud running")?.state.store;
    let mut admin = dc.admin().await?;
    let mut random = XorShift(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1);
    let mut lags = Vec::with_capacity(changes);
    for change in 0..changes {
        // A random moment relative to the agent's polling.
        tokio::time::sleep(Duration::from_millis(random.below(1500))).await;
        let index = random.below(users as u64);
        let name = format!("sb{index:05}");
        let display_name = format!("Changed {change} at {}", UnixMillis::now().0);
        admin
            .replace(
                &format!("CN={name},{bench_ou}"),
                "displayName",
                &display_name,
            )
            .await?;
        let changed = Instant::now();
        loop {
            let detail = store.user_detail(&stack.directory, &name).await?;
            if detail
                .is_some_and(|detail| detail.user.display_name.as_deref() == Some(&display_name))
            {
                lags.push(changed.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if changed.elapsed() > Duration::from_secs(60) {
                bail!("change {change} to {name} never reached the cloud");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    lags.sort_by(f64::total_cmp);
    Ok(lags)
}

/// Prints the delta lags measured one way, sorted; returns their p50 and p99.
fn report_lags(how: &str, lags: &[f64]) -> (f64, f64) {
    let (p50, p99) = (percentile(lags, 0.5), percentile(lags, 0.99));
    println!(
        "delta lag, {how}, over {} changes: p50 {p50:.0} ms, p99 {p99:.0} ms, max {:.0} ms",
        lags.len(),
        percentile(lags, 1.0)
    );
    (p50, p99)
}

/// `target/bench-domains`, beside the profile directory this binary runs from.
fn snapshot_directory() -> Result<PathBuf> {
    let executable = std::env::current_exe()?;
    let target = executable
        .parent()
        .and_then(Path::parent)
        .context("the bench runs from target/<profile>")?;
    Ok(target.join("bench-domains"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let users = argument("--users", 20_000)?;
    let changes = argument("--changes", 100)?;
    println!(
        "sync bench: {users} users, {ROUNDS} rounds of raw search and full sync, {changes} delta changes"
    );

    let bench_ou = format!("OU=SyncBench,{BASE_DN}");
    let snapshots = snapshot_directory()?;
    let loading = Instant::now();
    let ou = bench_ou.clone();
    let dc = tokio::task::spawn_blocking(move || {
        DomainController::shared_with_bulk_users(&snapshots, &ou, "sb", users)
    })
    .await??;
    println!(
        "DC with {users} users ready in {:.1} s (loaded once, then restored from a snapshot under target/bench-domains)",
        loading.elapsed().as_secs_f64()
    );

    let initial = Instant::now();
    let mut stack = Stack::start_with(StackOptions {
        allowed_ous: vec![bench_ou.clone()],
        ..StackOptions::default()
    })
    .await?;
    let store = stack
        .cloud
        .as_ref()
        .context("cloud running")?
        .state
        .store
        .clone();
    loop {
        let cursor = store.sync_start(&stack.directory).await?.cursor;
        if cursor.is_some_and(|cursor| matches!(cursor.phase, SyncPhase::Delta { .. })) {
            let status = store
                .sync_status(&stack.directory, UnixMillis::now())
                .await?;
            ensure!(
                status.users == users as u64,
                "first full sync stored {} users",
                status.users
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "first full sync (stack start, agent registration included): {:.2} s",
        initial.elapsed().as_secs_f64()
    );

    let mut raw_times = Vec::new();
    let mut full_times = Vec::new();
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let read = raw_search(&dc, &bench_ou).await?;
        let raw = started.elapsed().as_secs_f64();
        ensure!(read == users, "the raw search read {read} entries");
        let full = full_sync(&stack, users as u64).await?;
        println!("round {round}: raw search {raw:.2} s, full sync {full:.2} s");
        raw_times.push(raw);
        full_times.push(full);
    }
    let raw_search_s = median(&mut raw_times);
    let full_s = median(&mut full_times);

    let polled = delta_lags(&dc, &stack, &bench_ou, users, changes).await?;
    let (lag_p50, lag_p99) = report_lags("polled by update sequence number (the default)", &polled);

    // The same agent with change notification turned on.
    let config = stack.agent_config_path().to_owned();
    let text = std::fs::read_to_string(&config)?;
    ensure!(text.contains("change_notification = false"));
    std::fs::write(
        &config,
        text.replace("change_notification = false", "change_notification = true"),
    )?;
    stack.kill_agent().await?;
    stack.start_agent().await?;
    let notified = delta_lags(&dc, &stack, &bench_ou, users, changes).await?;
    let (notified_p50, notified_p99) =
        report_lags("notified by the DC and polled beside it", &notified);
    std::fs::write(&config, text)?;

    // The same with Replicating Directory Changes granted: the restarted agent reads with DirSync.
    dc.grant_replicating_directory_changes().await?;
    stack.kill_agent().await?;
    stack.start_agent().await?;
    let waiting = Instant::now();
    while !store
        .sync_start(&stack.directory)
        .await?
        .cursor
        .is_some_and(|cursor| {
            matches!(
                cursor.phase,
                SyncPhase::Delta {
                    dirsync_cookie: Some(_),
                    ..
                }
            )
        })
    {
        ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "the agent did not switch to DirSync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dirsync = delta_lags(&dc, &stack, &bench_ou, users, changes).await?;
    report_lags("read with DirSync", &dirsync);
    println!(
        "sync users={users} full_s={full_s:.2} raw_search_s={raw_search_s:.2} ratio={:.2} delta_lag_p50_ms={lag_p50:.0} delta_lag_p99_ms={lag_p99:.0} notified_lag_p50_ms={notified_p50:.0} notified_lag_p99_ms={notified_p99:.0}",
        full_s / raw_search_s
    );
    Ok(())
}
