//! `cargo xtask bench screening [--entries N]`: a filter of N breached passwords' SHA-1 hashes
//! (10,000,000 by default), as `writeback-cloud breached import` builds it, beside a hash set of
//! the same 64-bit keys: bytes per entry, the time to look a password up (hashing it included),
//! and the false-positive rate measured on passwords that are on no list.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use anyhow::{Result, bail};
use writeback_policy::screening::{
    CorpusKeys, FALSE_POSITIVE_RATE, ListHashing, built_in_common_passwords, is_common_password,
};

const LOOKUPS: usize = 1_000_000;

fn main() -> Result<()> {
    let arguments: Vec<String> = std::env::args().skip(2).collect();
    let entries: usize = match arguments.as_slice() {
        [] => 10_000_000,
        [flag, value] if flag == "--entries" => value.parse()?,
        _ => bail!("usage: cargo xtask bench screening [--entries N]"),
    };

    let started = Instant::now();
    let mut corpus = CorpusKeys::default();
    for line in (0..entries).map(|n| corpus_line(&format!("breached-{n}"))) {
        corpus.add_line(&line)?;
    }
    let read_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let filter = corpus.into_filter()?;
    let build_seconds = started.elapsed().as_secs_f64();

    let keys: HashSet<u64> = (0..entries)
        .map(|n| ListHashing::Sha1.key(&format!("breached-{n}")))
        .collect();
    // A hash set's table: one key and one control byte per slot.
    let hash_set_bytes = keys.capacity() * (8 + 1);

    let members: Vec<String> = (0..LOOKUPS)
        .map(|n| format!("breached-{}", n * 7 % entries))
        .collect();
    let strangers: Vec<String> = (0..LOOKUPS).map(|n| format!("not-listed-{n}")).collect();

    let mut found = 0usize;
    let started = Instant::now();
    for password in members.iter().chain(&strangers) {
        found += usize::from(filter.contains_password(black_box(password)));
    }
    let filter_ns = started.elapsed().as_nanos() as f64 / (2 * LOOKUPS) as f64;
    let mut found_in_set = 0usize;
    let started = Instant::now();
    for password in members.iter().chain(&strangers) {
        found_in_set += usize::from(keys.contains(&ListHashing::Sha1.key(black_box(password))));
    }
    let hash_set_ns = started.elapsed().as_nanos() as f64 / (2 * LOOKUPS) as f64;
    let false_positives = found.saturating_sub(LOOKUPS);
    if found < LOOKUPS || found_in_set < LOOKUPS {
        bail!("a listed password was not found: {found} and {found_in_set} of {LOOKUPS}");
    }

    let common = built_in_common_passwords().map_err(|error| anyhow::anyhow!("{error}"))?;
    let started = Instant::now();
    let mut common_hits = 0usize;
    for password in &strangers {
        common_hits += usize::from(is_common_password(common, black_box(password)));
    }
    let common_ns = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;

    println!(
        "screening entries={entries} bytes_per_entry={:.3} hash_set_bytes_per_entry={:.3} lookup_ns={filter_ns:.0} hash_set_lookup_ns={hash_set_ns:.0} lookup_ratio={:.2} false_positive_rate={:.5}% stated={:.5}% build_s={build_seconds:.1} read_s={read_seconds:.1}",
        filter.size_in_bytes() as f64 / entries as f64,
        hash_set_bytes as f64 / entries as f64,
        filter_ns / hash_set_ns,
        false_positives as f64 * 100.0 / LOOKUPS as f64,
        FALSE_POSITIVE_RATE * 100.0,
    );
    println!(
        "built-in common passwords: entries={} bytes={} bytes_per_entry={:.3} lookup_ns={common_ns:.0} (lower case and trimmed core) false_positives={common_hits} of {LOOKUPS}",
        common.entries(),
        common.size_in_bytes(),
        common.size_in_bytes() as f64 / common.entries() as f64,
    );
    Ok(())
}

fn corpus_line(password: &str) -> String {
    let key = ListHashing::Sha1.key(password);
    // The corpus carries whole SHA-1 hashes; only the first 64 bits matter to the filter.
    format!("{key:016X}{:024X}:1", 0)
}
