//! Every new password, from the portal, the console, the API or the CLI, is screened before it
//! is sent: against the built-in list of commonly used passwords, and against the corpus of
//! breached passwords an administrator imported (`writeback-cloud breached import FILE`), when
//! there is one.
//!
//! The imported filter is a file beside the database. The cloud reads it at start and again
//! when it changes ([`PasswordScreen::refresh`], every [`REFRESH_INTERVAL`]), so an import on a
//! running cloud takes effect without a restart; a damaged file is refused and the last good
//! filter kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use writeback_policy::PolicyReason;
use writeback_policy::screening::{
    PasswordFilter, ScreeningError, built_in_common_passwords, is_common_password,
};

use crate::service::error::CloudError;

/// How often the imported filter's file is looked at for a new import.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct PasswordScreen {
    common: &'static PasswordFilter,
    imported_path: PathBuf,
    imported: RwLock<Imported>,
}

#[derive(Debug, Default)]
struct Imported {
    modified: Option<SystemTime>,
    filter: Option<Arc<PasswordFilter>>,
}

/// What the imported corpus is, for the console and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedCorpus {
    pub entries: u64,
    pub hashing: &'static str,
}

impl PasswordScreen {
    /// The built-in list, and the imported filter at `imported_path` when there is one. A
    /// damaged import stops the start: screening against less than the administrator imported
    /// would pass passwords they meant to refuse.
    pub fn open(imported_path: PathBuf) -> Result<Self, CloudError> {
        let common = built_in_common_passwords().map_err(|error| {
            CloudError::Internal(format!("the built-in list of common passwords: {error}"))
        })?;
        let screen = Self {
            common,
            imported_path,
            imported: RwLock::default(),
        };
        screen.refresh()?;
        Ok(screen)
    }

    /// Reads the imported filter again if its file changed since it was read. Blocking: a
    /// large corpus's filter is hundreds of megabytes.
    pub fn refresh(&self) -> Result<Option<ImportedCorpus>, CloudError> {
        let modified = match std::fs::metadata(&self.imported_path) {
            Ok(metadata) => metadata.modified().ok(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.replace(None, None);
                return Ok(None);
            }
            Err(error) => return Err(io_failure(&self.imported_path, error)),
        };
        if modified.is_some() && modified == self.read_imported().modified {
            return Ok(self.imported());
        }
        let filter = read_filter(&self.imported_path)?;
        self.replace(modified, Some(Arc::new(filter)));
        let imported = self.imported();
        if let Some(corpus) = imported {
            tracing::info!(
                entries = corpus.entries,
                hashing = corpus.hashing,
                path = %self.imported_path.display(),
                "breached-password filter loaded"
            );
        }
        Ok(imported)
    }

    /// Why `password` may not be used: on the built-in list of common passwords, or in the
    /// imported corpus of breached ones. `None` when it is on neither.
    pub fn screen(&self, password: &str) -> Option<PolicyReason> {
        if is_common_password(self.common, password) {
            return Some(PolicyReason::Common);
        }
        let imported = self.read_imported().filter.clone();
        imported
            .filter(|filter| filter.contains_password(password))
            .map(|_| PolicyReason::Breached)
    }

    pub fn imported(&self) -> Option<ImportedCorpus> {
        self.read_imported()
            .filter
            .as_ref()
            .map(|filter| ImportedCorpus {
                entries: filter.entries(),
                hashing: filter.hashing().name(),
            })
    }

    fn read_imported(&self) -> std::sync::RwLockReadGuard<'_, Imported> {
        self.imported
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn replace(&self, modified: Option<SystemTime>, filter: Option<Arc<PasswordFilter>>) {
        let mut imported = self
            .imported
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *imported = Imported { modified, filter };
    }
}

/// Reads and checks a filter file written by [`write_filter`].
pub fn read_filter(path: &Path) -> Result<PasswordFilter, CloudError> {
    let bytes = std::fs::read(path).map_err(|error| io_failure(path, error))?;
    PasswordFilter::from_bytes(&bytes).map_err(|error| filter_failure(path, &error))
}

/// Writes `filter` to `path` whole or not at all (a temporary file renamed over it), so that a
/// cloud reading it never sees half a filter.
pub fn write_filter(path: &Path, filter: &PasswordFilter) -> Result<(), CloudError> {
    let temporary = path.with_extension("importing");
    std::fs::write(&temporary, filter.to_bytes()).map_err(|error| io_failure(&temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| io_failure(path, error))
}

fn io_failure(path: &Path, source: std::io::Error) -> CloudError {
    CloudError::Io {
        context: format!("reading the breached-password filter {}", path.display()),
        source,
    }
}

fn filter_failure(path: &Path, error: &ScreeningError) -> CloudError {
    CloudError::InvalidInput(format!(
        "{}: {error}; import the corpus again",
        path.display()
    ))
}

/// Looks at the imported filter's file every [`REFRESH_INTERVAL`] until the cloud stops.
pub async fn refresh_periodically(
    screen: Arc<PasswordScreen>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(REFRESH_INTERVAL) => {}
        }
        let screen = screen.clone();
        let refreshed = tokio::task::spawn_blocking(move || screen.refresh()).await;
        if let Ok(Err(error)) = refreshed {
            tracing::error!(%error, "the breached-password filter was not reloaded; the last one read stays in use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use writeback_policy::screening::CorpusKeys;

    fn corpus_of(passwords: &[&str]) -> PasswordFilter {
        let mut corpus = CorpusKeys::default();
        for password in passwords {
            let key = writeback_policy::screening::ListHashing::Sha1.key(password);
            corpus.add_line(&format!("{key:016X}{:024X}", 0)).unwrap();
        }
        corpus.into_filter().unwrap()
    }

    #[test]
    fn an_import_is_used_once_read_and_a_damaged_one_keeps_the_last_good_filter() {
        let directory = std::env::temp_dir().join(format!("screen-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("breached-passwords.fuse");
        let _ = std::fs::remove_file(&path);
        let screen = PasswordScreen::open(path.clone()).unwrap();
        assert_eq!(screen.screen("Password1!"), Some(PolicyReason::Common));
        assert_eq!(screen.screen("Glacier-Tram-Velvet-81"), None);
        assert_eq!(screen.imported(), None);

        write_filter(&path, &corpus_of(&["Glacier-Tram-Velvet-81"])).unwrap();
        screen.refresh().unwrap();
        assert_eq!(
            screen.screen("Glacier-Tram-Velvet-81"),
            Some(PolicyReason::Breached)
        );
        assert_eq!(screen.screen("glacier-tram-velvet-81"), None);
        assert_eq!(screen.imported().unwrap().entries, 1);

        std::fs::write(&path, b"WBPWFLT1 damaged").unwrap();
        // A file changed within the same mtime tick would not be noticed; make sure it is.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(screen.refresh().is_err());
        assert_eq!(
            screen.screen("Glacier-Tram-Velvet-81"),
            Some(PolicyReason::Breached)
        );
        assert!(PasswordScreen::open(path.clone()).is_err());
        std::fs::remove_file(&path).unwrap();
        screen.refresh().unwrap();
        assert_eq!(screen.screen("Glacier-Tram-Velvet-81"), None);
    }
}
