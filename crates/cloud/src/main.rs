//! `writeback-cloud`: serve, or run a set-up command against the data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use secrecy::SecretString;
use writeback_cloud::CloudConfig;
use writeback_config::Sources;

/// Thousands of agent connections, each set up with a TLS handshake and then idle, fragment the
/// system allocator's per-thread arenas: mimalloc keeps an idle connection's cost near what it
/// holds (`cargo xtask bench cluster`, `idle_agent_kib`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "writeback-cloud",
    version,
    about = "Writeback cloud service: admin API and agent relay"
)]
struct Arguments {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Describe(writeback_config::command_line::Describe),
    /// Serve HTTPS: the admin console, the admin API and the agent relay.
    Serve {
        /// Overrides `listen`, e.g. 0.0.0.0:8443.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Manage administrators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Issue agent registration tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the SHA-256 fingerprint of the certificate the cloud serves, for agents to pin.
    Fingerprint,
    /// Print the admin API's OpenAPI document (the same as GET /api/v1/openapi.json).
    Openapi,
    /// Write a consistent copy of the database to FILE (a new file, owner-only), while the cloud
    /// runs. The secrets key and the cloud's own TLS files are not in it: it names them, to be
    /// kept apart. (With PostgreSQL, once it lands, use pg_dump instead.)
    Backup { file: PathBuf },
    /// Make FILE, written by `backup`, the database of a data directory that has none yet.
    Restore { file: PathBuf },
    /// Screen new passwords against a corpus of breached passwords.
    Breached {
        #[command(subcommand)]
        command: BreachedCommand,
    },
    /// Manage the key that seals the secrets kept in the database.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BreachedCommand {
    /// Read FILE, a list of SHA-1 or NTLM password hashes (`HASH` or `HASH:COUNT` per line, as
    /// Have I Been Pwned publishes them), into the filter new passwords are screened against
    /// (`breached_passwords_file`). It replaces the last import; a running cloud uses it within
    /// seconds. No password and no whole hash is kept: about 2.3 bytes per entry.
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Replace the key with a new one and re-seal every stored secret under it, in one
    /// transaction. Run it with the service stopped; afterwards the old key opens nothing.
    RotateKey,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an administrator. The password is read from --password-file, or prompted for.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Remove an administrator's authenticator (a lost phone). Their sessions end, and they enrol
    /// a new one at their next console sign-in.
    ResetSecondFactor {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a single-use, expiring token with which one agent registers for a directory.
    Create {
        /// The directory (AD domain) the agent will serve, e.g. `corp`. Created if new.
        #[arg(long)]
        directory: String,
        /// Lifetime in minutes; defaults to `registration_token_minutes`.
        #[arg(long)]
        ttl_minutes: Option<u64>,
    },
}

fn load_config(arguments: &Arguments, listen: Option<&String>) -> Result<CloudConfig> {
    let mut flags = Vec::new();
    if let Some(data_dir) = &arguments.data_dir {
        flags.push((
            "data_dir".to_owned(),
            toml::Value::String(data_dir.display().to_string()),
        ));
    }
    if let Some(listen) = listen {
        flags.push(("listen".to_owned(), toml::Value::String(listen.clone())));
    }
    let sources = Sources {
        file: arguments.config.clone(),
        environment: std::env::vars().collect(),
        flags,
    };
    Ok(writeback_config::load(&sources, "WRITEBACK_CLOUD_")?)
}

fn read_new_password(path: Option<&PathBuf>) -> Result<SecretString> {
    match path {
        Some(path) => Ok(writeback_config::read_secret_file(path)?),
        None => {
            let first = rpassword::prompt_password("New administrator password: ")?;
            let second = rpassword::prompt_password("Repeat it: ")?;
            if first != second {
                bail!("the two passwords differ");
            }
            Ok(SecretString::from(first))
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let arguments = Arguments::parse();
    if let Command::Describe(asked) = &arguments.command {
        asked.print(Arguments::command())?;
        return Ok(());
    }
    let listen = match &arguments.command {
        Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let config = load_config(&arguments, listen.as_ref())?;
    writeback_config::init_logging(&config.log)?;
    match &arguments.command {
        // Printed above, before any configuration was read.
        Command::Describe(_) => {}
        Command::Serve { .. } => {
            let running = writeback_cloud::start(config).await?;
            println!("writeback-cloud listening on https://{}", running.address);
            println!("certificate fingerprint (sha256): {}", running.fingerprint);
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate() => {}
            }
            tracing::info!("shutting down");
            running.stop().await;
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    password_file,
                },
        } => {
            let password = read_new_password(password_file.as_ref())?;
            let store = writeback_cloud::open_store(&config).await?;
            writeback_cloud::create_administrator(&store, email, &password).await?;
            println!("administrator {email} created");
        }
        Command::Admin {
            command: AdminCommand::ResetSecondFactor { email },
        } => {
            let store = writeback_cloud::open_store(&config).await?;
            writeback_cloud::reset_second_factor(&store, email).await?;
            println!(
                "the second factor of {email} is removed; they enrol a new one at their next console sign-in"
            );
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    directory,
                    ttl_minutes,
                },
        } => {
            let directory = directory.parse().context("invalid directory name")?;
            let minutes = ttl_minutes
                .unwrap_or(config.registration_token_minutes)
                .max(1);
            let store = writeback_cloud::open_store(&config).await?;
            let (token, _) = writeback_cloud::create_registration_token(
                &store,
                &directory,
                Duration::from_secs(minutes * 60),
            )
            .await?;
            println!("{}", secrecy::ExposeSecret::expose_secret(&token));
            eprintln!(
                "single-use registration token for directory {directory}; expires in {minutes} minutes"
            );
        }
        Command::Openapi => {
            println!(
                "{}",
                writeback_cloud::api::openapi_document().to_pretty_json()?
            );
        }
        Command::Secrets {
            command: SecretsCommand::RotateKey,
        } => {
            let store = writeback_cloud::open_store(&config).await?;
            let path = config.secrets_key_path();
            let resealed = writeback_cloud::service::secrets::rotate(&store, &path).await?;
            println!(
                "{} holds a new key; {resealed} stored secrets are sealed under it",
                path.display()
            );
        }
        Command::Breached {
            command: BreachedCommand::Import { file },
        } => import_breached(&config, file)?,
        Command::Backup { file } => {
            let apart = writeback_cloud::back_up(&config, file).await?;
            println!("database copied to {}", file.display());
            println!("not in it, and needed to restore it (keep them apart from the backup):");
            for path in apart {
                println!("  {}", path.display());
            }
        }
        Command::Restore { file } => {
            let missing = writeback_cloud::restore(&config, file).await?;
            println!(
                "{} restored as {}",
                file.display(),
                config.database_path().display()
            );
            for path in missing {
                println!(
                    "put back before starting: {} (from where you keep it apart)",
                    path.display()
                );
            }
        }
        Command::Fingerprint => {
            let (certificate, _) = writeback_cloud::certificate_paths(&config)?;
            println!("{}", writeback_tls::Fingerprint::of_pem_file(&certificate)?);
        }
    }
    Ok(())
}

fn import_breached(config: &CloudConfig, file: &Path) -> Result<()> {
    use std::io::BufRead;
    let started = std::time::Instant::now();
    let reader = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut corpus = writeback_policy::screening::CorpusKeys::default();
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        corpus.add_line(&String::from_utf8_lossy(&line))?;
    }
    let hashes = corpus.hashes();
    let filter = corpus.into_filter()?;
    let path = config.breached_passwords_path();
    writeback_cloud::service::screening::write_filter(&path, &filter)?;
    println!(
        "{} {} hashes ({} distinct) from {} in {:.1} s",
        filter.hashing().name(),
        hashes,
        filter.entries(),
        file.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "filter written to {}: {} bytes, {:.2} bytes per entry, false positives about 1 in 65,536",
        path.display(),
        filter.size_in_bytes(),
        filter.size_in_bytes() as f64 / filter.entries() as f64
    );
    println!(
        "a running cloud screens against it within {} s; every node of a cluster needs its own copy",
        writeback_cloud::service::screening::REFRESH_INTERVAL.as_secs()
    );
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
