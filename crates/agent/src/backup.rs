//! `writeback-agent backup FILE` and `restore FILE`: the agent's state in one file, readable by
//! its owner only. It holds the agent's private keys (its identity and sealing keys, with the
//! cloud's address and trust) and the outcome journal, so that an agent restored on a new host
//! is the same agent to the cloud and still recognises the requests it already applied.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::AgentError;
use crate::config::AgentConfig;

/// What a backup file says it is, so that another file is refused rather than misread.
const FORMAT: &str = "writeback-agent-backup/1";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backup {
    format: String,
    /// `agent.json`, as it was.
    state: serde_json::Value,
    /// `journal.jsonl`, as it was; empty when the agent had none.
    journal: String,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { context, source }
}

/// Writes the agent's state to `file`, which must not exist yet.
pub fn back_up(config: &AgentConfig, file: &Path) -> Result<(), AgentError> {
    let state_path = config.state_path();
    let state = std::fs::read_to_string(&state_path).map_err(io(format!(
        "reading {} (is this agent registered?)",
        state_path.display()
    )))?;
    let state = serde_json::from_str(&state)
        .map_err(|error| AgentError::State(format!("{}: {error}", state_path.display())))?;
    let journal_path = config.journal_path();
    let journal = match std::fs::read_to_string(&journal_path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(io(format!("reading {}", journal_path.display()))(error)),
    };
    let backup = Backup {
        format: FORMAT.to_owned(),
        state,
        journal,
    };
    let text =
        serde_json::to_vec_pretty(&backup).map_err(|error| AgentError::State(error.to_string()))?;
    write_new_private(file, &text)
}

/// Puts the state in `file` back into the data directory, which must hold no agent yet.
pub fn restore(config: &AgentConfig, file: &Path) -> Result<(), AgentError> {
    let text = std::fs::read(file).map_err(io(format!("reading {}", file.display())))?;
    let backup: Backup = serde_json::from_slice(&text).map_err(|error| {
        AgentError::State(format!(
            "{} is not a writeback-agent backup: {error}",
            file.display()
        ))
    })?;
    if backup.format != FORMAT {
        return Err(AgentError::State(format!(
            "{} is a backup of format {}, which this agent does not know",
            file.display(),
            backup.format
        )));
    }
    let state_path = config.state_path();
    if state_path.exists() {
        return Err(AgentError::State(format!(
            "{} already holds an agent; restore into an empty data directory",
            state_path.display()
        )));
    }
    let state = serde_json::to_vec_pretty(&backup.state)
        .map_err(|error| AgentError::State(error.to_string()))?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io(format!("creating {}", config.data_dir.display())))?;
    writeback_config::write_private_file(&config.journal_path(), backup.journal.as_bytes())
        .map_err(io(format!("writing {}", config.journal_path().display())))?;
    // The state last: an agent is only there once everything it needs is.
    writeback_config::write_private_file(&state_path, &state)
        .map_err(io(format!("writing {}", state_path.display())))
}

fn write_new_private(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!(
            "creating {} (an existing file is never overwritten)",
            path.display()
        )))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(directory: &Path) -> AgentConfig {
        AgentConfig {
            data_dir: directory.to_owned(),
            ..AgentConfig::default()
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "writeback-agent-backup-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn a_backup_restores_the_state_and_journal_into_an_empty_directory_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = scratch("round-trip");
        let original = config_in(&root.join("original"));
        std::fs::create_dir_all(&original.data_dir).unwrap();
        std::fs::write(original.state_path(), br#"{"agent_id":"x","keys":[1,2,3]}"#).unwrap();
        std::fs::write(original.journal_path(), "line one\nline two\n").unwrap();
        let file = root.join("agent-backup.json");
        back_up(&original, &file).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            back_up(&original, &file).is_err(),
            "an existing file is never overwritten"
        );

        let restored = config_in(&root.join("restored"));
        restore(&restored, &file).unwrap();
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(restored.state_path()).unwrap()).unwrap();
        assert_eq!(state["keys"], serde_json::json!([1, 2, 3]));
        assert_eq!(
            std::fs::read_to_string(restored.journal_path()).unwrap(),
            "line one\nline two\n"
        );
        assert_eq!(
            std::fs::metadata(restored.state_path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(
            restore(&restored, &file).is_err(),
            "an agent already there is kept"
        );
    }

    #[test]
    fn another_file_is_refused_and_nothing_is_written() {
        let root = scratch("refused");
        let file = root.join("not-a-backup.json");
        std::fs::write(
            &file,
            br#"{"format":"something-else/9","state":{},"journal":""}"#,
        )
        .unwrap();
        let restored = config_in(&root.join("restored"));
        assert!(restore(&restored, &file).is_err());
        std::fs::write(&file, b"garbage").unwrap();
        assert!(restore(&restored, &file).is_err());
        assert!(!restored.state_path().exists());
    }
}
