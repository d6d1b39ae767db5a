//! The outcome journal: what makes a request id take effect at most once. A repeated id gets the
//! recorded outcome without touching the directory; a repeat that arrives while the first is still
//! running waits for it. Outcomes are appended to `journal.jsonl` before the answer is sent, so
//! that an agent restarted between applying a request and answering it still recognises the
//! resend; the file is flushed to disk right after, off the answer's path.
//!
//! Outcomes that did not touch the directory and may succeed later (the deadline had already
//! passed, the DC could not be reached before writing) are not recorded: a retry deserves a real
//! attempt.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use writeback_proto::ids::RequestId;
use writeback_proto::operation::Verdict;
use writeback_proto::time::UnixMillis;

use crate::AgentError;

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    request_id: RequestId,
    fingerprint: String,
    /// The operation's fingerprint by the anchor its logon name led to, when it named the user
    /// by logon name and the user was found: see
    /// [`writeback_proto::operation::Operation::fingerprint_by_anchor`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by_anchor: Option<String>,
    #[serde(flatten)]
    verdict: Verdict,
    at: UnixMillis,
}

#[derive(Debug)]
enum Entry {
    Running {
        fingerprint: String,
        finished: watch::Receiver<Option<Verdict>>,
    },
    Done {
        fingerprint: String,
        by_anchor: Option<String>,
        verdict: Verdict,
        at: UnixMillis,
    },
}

/// What to do with a request id.
#[derive(Debug)]
pub enum Begin<'a> {
    /// First sight: apply it, then [`RunningGuard::finish`].
    Fresh(RunningGuard<'a>),
    /// Already applied: this is the outcome.
    Finished(Verdict),
    /// Being applied right now: wait for it.
    Running(watch::Receiver<Option<Verdict>>),
    /// The id was used for a different operation.
    Conflict,
}

/// Marks a request as running. Dropping it unfinished (a cancelled task) forgets the request, and
/// anyone waiting on it starts over.
#[derive(Debug)]
pub struct RunningGuard<'a> {
    journal: &'a Journal,
    request_id: RequestId,
    fingerprint: String,
    finished: Option<watch::Sender<Option<Verdict>>>,
}

#[derive(Debug)]
pub struct Journal {
    path: Option<PathBuf>,
    retention: Duration,
    entries: Mutex<HashMap<RequestId, Entry>>,
    file: Mutex<Option<File>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// A journal kept only in memory, for tests.
    pub fn in_memory(retention: Duration) -> Self {
        Self {
            path: None,
            retention,
            entries: Mutex::new(HashMap::new()),
            file: Mutex::new(None),
        }
    }

    /// Loads `path` (dropping entries older than `retention` and unreadable lines), rewrites it
    /// compacted, and keeps it open for appending.
    pub fn open(path: &Path, retention: Duration, now: UnixMillis) -> Result<Self, AgentError> {
        let io = |context: String| move |source| AgentError::Io { context, source };
        let mut entries = HashMap::new();
        let mut kept = Vec::new();
        if path.exists() {
            let file = File::open(path).map_err(io(format!("reading {}", path.display())))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(io(format!("reading {}", path.display())))?;
                let Ok(parsed) = serde_json::from_str::<Line>(&line) else {
                    // A torn last line after a crash: nothing was answered for it.
                    continue;
                };
                if now.duration_since(parsed.at) < retention {
                    entries.insert(
                        parsed.request_id,
                        Entry::Done {
                            fingerprint: parsed.fingerprint.clone(),
                            by_anchor: parsed.by_anchor.clone(),
                            verdict: parsed.verdict.clone(),
                            at: parsed.at,
                        },
                    );
                    kept.push(line);
                }
            }
        }
        let temporary = path.with_extension("jsonl.tmp");
        let mut compacted =
            File::create(&temporary).map_err(io(format!("writing {}", temporary.display())))?;
        for line in &kept {
            writeln!(compacted, "{line}")
                .map_err(io(format!("writing {}", temporary.display())))?;
        }
        compacted
            .sync_all()
            .map_err(io(format!("writing {}", temporary.display())))?;
        std::fs::rename(&temporary, path).map_err(io(format!("replacing {}", path.display())))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        Ok(Self {
            path: Some(path.to_owned()),
            retention,
            entries: Mutex::new(entries),
            file: Mutex::new(Some(file)),
        })
    }

    pub fn begin(&self, request_id: RequestId, fingerprint: &str) -> Begin<'_> {
        let mut entries = lock(&self.entries);
        match entries.get(&request_id) {
            Some(Entry::Done {
                fingerprint: seen,
                by_anchor,
                ..
            }) if seen != fingerprint && by_anchor.as_deref() != Some(fingerprint) => {
                Begin::Conflict
            }
            Some(Entry::Running {
                fingerprint: seen, ..
            }) if seen != fingerprint => Begin::Conflict,
            Some(Entry::Done { verdict, .. }) => Begin::Finished(verdict.clone()),
            Some(Entry::Running { finished, .. }) => Begin::Running(finished.clone()),
            None => {
                let (sender, receiver) = watch::channel(None);
                entries.insert(
                    request_id,
                    Entry::Running {
                        fingerprint: fingerprint.to_owned(),
                        finished: receiver,
                    },
                );
                Begin::Fresh(RunningGuard {
                    journal: self,
                    request_id,
                    fingerprint: fingerprint.to_owned(),
                    finished: Some(sender),
                })
            }
        }
    }

    fn append(&self, line: &Line) {
        let mut file = lock(&self.file);
        let Some(file) = file.as_mut() else {
            return;
        };
        let written = serde_json::to_string(line)
            .map_err(std::io::Error::other)
            .and_then(|text| writeln!(file, "{text}"))
            .and_then(|()| file.try_clone());
        let request_id = line.request_id;
        match written {
            // The line is in the kernel now, which is what an agent restarted after a crash needs
            // to recognise a resend; it is flushed to disk right after, off the answer's path.
            Ok(copy) => flush_later(copy, request_id),
            Err(error) => {
                tracing::error!(%error, path = ?self.path, %request_id, "cannot append to the outcome journal; a resend after a restart could be applied again");
            }
        }
    }
}

fn flush_later(file: File, request_id: RequestId) {
    let flush = move || {
        if let Err(error) = file.sync_data() {
            tracing::error!(%error, %request_id, "cannot flush the outcome journal to disk");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(flush);
        }
        Err(_) => flush(),
    }
}

impl RunningGuard<'_> {
    /// Records the outcome (when `keep`) and hands it to anyone waiting. `by_anchor` is the
    /// operation's fingerprint by the anchor its logon name led to, which a retry may carry.
    pub fn finish(
        mut self,
        verdict: &Verdict,
        keep: bool,
        by_anchor: Option<String>,
        now: UnixMillis,
    ) {
        let journal = self.journal;
        let mut entries = lock(&journal.entries);
        entries.retain(|_, entry| !matches!(entry, Entry::Done { at, .. } if now.duration_since(*at) >= journal.retention));
        if keep {
            entries.insert(
                self.request_id,
                Entry::Done {
                    fingerprint: self.fingerprint.clone(),
                    by_anchor: by_anchor.clone(),
                    verdict: verdict.clone(),
                    at: now,
                },
            );
            drop(entries);
            journal.append(&Line {
                request_id: self.request_id,
                fingerprint: self.fingerprint.clone(),
                by_anchor,
                verdict: verdict.clone(),
                at: now,
            });
        } else {
            entries.remove(&self.request_id);
            drop(entries);
        }
        if let Some(finished) = self.finished.take() {
            let _ = finished.send(Some(verdict.clone()));
        }
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if self.finished.take().is_some() {
            lock(&self.journal.entries).remove(&self.request_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use writeback_proto::result::{OutcomeWarning, ResultCode};

    use super::*;

    const NOW: UnixMillis = UnixMillis(10_000_000);

    fn temporary(name: &str) -> PathBuf {
        let directory =
            std::env::temp_dir().join(format!("writeback-journal-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        directory.join("journal.jsonl")
    }

    #[test]
    fn a_finished_request_returns_its_outcome_and_a_different_operation_conflicts() {
        let journal = Journal::in_memory(Duration::from_secs(3600));
        let id = RequestId::generate().unwrap();
        let Begin::Fresh(guard) = journal.begin(id, "reset|jdoe") else {
            panic!("first sight is fresh");
        };
        assert!(matches!(journal.begin(id, "reset|jdoe"), Begin::Running(_)));
        guard.finish(&Verdict::from(ResultCode::Success), true, None, NOW);
        assert!(matches!(
            journal.begin(id, "reset|jdoe"),
            Begin::Finished(Verdict {
                result: ResultCode::Success,
                ..
            })
        ));
        assert!(matches!(journal.begin(id, "unlock|jdoe"), Begin::Conflict));
    }

    #[test]
    fn unkept_outcomes_are_forgotten() {
        let journal = Journal::in_memory(Duration::from_secs(3600));
        let id = RequestId::generate().unwrap();
        let Begin::Fresh(guard) = journal.begin(id, "f") else {
            panic!()
        };
        guard.finish(&Verdict::from(ResultCode::Timeout), false, None, NOW);
        assert!(matches!(journal.begin(id, "f"), Begin::Fresh(_)));
    }

    #[tokio::test]
    async fn an_abandoned_request_releases_its_waiters_and_can_run_again() {
        let journal = Journal::in_memory(Duration::from_secs(3600));
        let id = RequestId::generate().unwrap();
        let Begin::Fresh(guard) = journal.begin(id, "f") else {
            panic!()
        };
        let Begin::Running(mut waiter) = journal.begin(id, "f") else {
            panic!()
        };
        drop(guard);
        assert!(waiter.wait_for(Option::is_some).await.is_err());
        assert!(matches!(journal.begin(id, "f"), Begin::Fresh(_)));
    }

    /// Sent by logon name and found, a request may come again by the anchor the name led to (the
    /// user was synced in between): the same request, also after a restart. Another anchor, or
    /// another operation on the same anchor, is a different request.
    #[test]
    fn a_retry_by_the_anchor_the_logon_name_led_to_is_the_same_request() {
        let path = temporary("by-anchor");
        let id = RequestId::generate().unwrap();
        {
            let journal = Journal::open(&path, Duration::from_secs(3600), NOW).unwrap();
            let Begin::Fresh(guard) = journal.begin(id, "reset|logon_name:jdoe") else {
                panic!("first sight is fresh");
            };
            assert!(matches!(
                journal.begin(id, "reset|object_guid:1"),
                Begin::Conflict
            ));
            guard.finish(
                &Verdict::from(ResultCode::Success),
                true,
                Some("reset|object_guid:1".into()),
                NOW,
            );
        }
        let journal = Journal::open(&path, Duration::from_secs(3600), NOW).unwrap();
        for same in ["reset|logon_name:jdoe", "reset|object_guid:1"] {
            assert!(
                matches!(
                    journal.begin(id, same),
                    Begin::Finished(Verdict {
                        result: ResultCode::Success,
                        ..
                    })
                ),
                "{same}"
            );
        }
        for different in ["reset|object_guid:2", "unlock|object_guid:1"] {
            assert!(
                matches!(journal.begin(id, different), Begin::Conflict),
                "{different}"
            );
        }
    }

    #[tokio::test]
    async fn a_waiter_receives_the_running_outcome() {
        let journal = Journal::in_memory(Duration::from_secs(3600));
        let id = RequestId::generate().unwrap();
        let Begin::Fresh(guard) = journal.begin(id, "f") else {
            panic!()
        };
        let Begin::Running(mut waiter) = journal.begin(id, "f") else {
            panic!()
        };
        guard.finish(&Verdict::from(ResultCode::AccountDisabled), true, None, NOW);
        let outcome = waiter.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(outcome, Some(Verdict::from(ResultCode::AccountDisabled)));
    }

    #[test]
    fn outcomes_survive_a_restart_and_expire_after_the_retention() {
        let path = temporary("restart");
        let id = RequestId::generate().unwrap();
        {
            let journal = Journal::open(&path, Duration::from_secs(3600), NOW).unwrap();
            let Begin::Fresh(guard) = journal.begin(id, "f") else {
                panic!()
            };
            let verdict = Verdict {
                result: ResultCode::Success,
                warnings: vec![OutcomeWarning::WasNotLocked],
                trace: None,
            };
            guard.finish(&verdict, true, None, NOW);
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let reopened = Journal::open(
            &path,
            Duration::from_secs(3600),
            NOW.saturating_add(Duration::from_secs(60)),
        )
        .unwrap();
        assert!(matches!(
            reopened.begin(id, "f"),
            Begin::Finished(Verdict { result: ResultCode::Success, warnings, .. })
                if warnings == [OutcomeWarning::WasNotLocked]
        ));
        drop(reopened);
        let expired = Journal::open(
            &path,
            Duration::from_secs(3600),
            NOW.saturating_add(Duration::from_secs(3600)),
        )
        .unwrap();
        assert!(matches!(expired.begin(id, "f"), Begin::Fresh(_)));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// Properties of reading the journal back after a crash: whatever the file holds, the agent
    /// starts, and every whole line it wrote answers its request again.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        fn line(request_id: RequestId, fingerprint: &str) -> String {
            serde_json::to_string(&Line {
                request_id,
                fingerprint: fingerprint.to_owned(),
                by_anchor: None,
                verdict: Verdict::from(ResultCode::Success),
                at: NOW,
            })
            .unwrap()
        }

        proptest! {
            #[test]
            fn any_file_opens_and_keeps_every_whole_line(
                noise in vec("\\PC{0,200}", 0..8),
                kept in vec(any::<[u8; 16]>(), 0..6),
                torn in 0usize..40,
            ) {
                let path = temporary(&format!("property-{}", RequestId::generate().unwrap()));
                let ids: Vec<RequestId> = kept
                    .iter()
                    .map(|bytes| RequestId::from_bytes(*bytes))
                    .collect();
                let mut text = String::new();
                for (index, id) in ids.iter().enumerate() {
                    text.push_str(&line(*id, "reset|jdoe"));
                    text.push('\n');
                    if let Some(noise) = noise.get(index) {
                        text.push_str(noise);
                        text.push('\n');
                    }
                }
                // A line cut short by a crash, last.
                let last = line(RequestId::generate().unwrap(), "unlock|jdoe");
                text.push_str(&last[..torn.min(last.len() - 1)]);
                std::fs::write(&path, text).unwrap();
                let journal = Journal::open(&path, Duration::from_secs(3600), NOW).unwrap();
                for id in ids {
                    let answered = matches!(
                        journal.begin(id, "reset|jdoe"),
                        Begin::Finished(Verdict { result: ResultCode::Success, .. })
                    );
                    prop_assert!(answered);
                }
                drop(journal);
                std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
            }
        }
    }
}
