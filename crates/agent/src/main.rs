//! `writeback-agent`: `register` once with a token, then `run` as a service.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use secrecy::SecretString;
use writeback_agent::AgentConfig;
use writeback_agent::state::CloudTrust;
use writeback_config::Sources;

#[derive(Debug, Parser)]
#[command(
    name = "writeback-agent",
    version,
    about = "Writeback on-premises agent: dials out to the cloud, writes to Active Directory"
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
    /// Register this agent with the cloud, using a token from `writeback-cloud token create`.
    Register {
        /// The cloud's address, e.g. https://writeback.example.com:8443
        #[arg(long)]
        cloud: String,
        /// The registration token (prefer --token-file: arguments are visible to other users).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Trust exactly the cloud certificate with this SHA-256 fingerprint
        /// (`writeback-cloud fingerprint` prints it).
        #[arg(long, conflicts_with = "cloud_ca_file")]
        pin: Option<String>,
        /// Trust cloud certificates issued by this CA.
        #[arg(long)]
        cloud_ca_file: Option<PathBuf>,
        /// How this agent is shown in the cloud; defaults to the host name.
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing registration with a new identity.
        #[arg(long)]
        force: bool,
    },
    /// Run the agent: hold the connection to the cloud and serve its requests.
    Run,
    /// Print the catalogue of event ids the agent logs, with their meaning.
    Events,
    /// Check, as the configured service account, that it holds exactly the rights Writeback
    /// needs; each check passes, warns or fails, with the fix. Exits 1 if any check fails.
    Doctor,
    /// Print the ACEs the service account needs (for the whole domain, or one OU); with --apply,
    /// add them, signed in as a domain administrator.
    Grant {
        /// Grant on this OU's users instead of the whole domain's.
        #[arg(long)]
        ou: Option<String>,
        /// Add the ACEs instead of only printing them.
        #[arg(long, requires_all = ["admin_bind_name", "admin_password_file"])]
        apply: bool,
        /// A domain administrator, as a UPN or DN (only with --apply).
        #[arg(long)]
        admin_bind_name: Option<String>,
        /// A file holding that administrator's password.
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
    /// Write this agent's state (its keys, its cloud, its outcome journal) to FILE, readable by
    /// its owner only. It holds private keys: keep it as you keep the host's own secrets.
    Backup { file: PathBuf },
    /// Put a backup made by `backup` in place, in a data directory that holds no agent yet.
    Restore { file: PathBuf },
}

fn load_config(arguments: &Arguments) -> Result<AgentConfig> {
    let mut flags = Vec::new();
    if let Some(data_dir) = &arguments.data_dir {
        flags.push((
            "data_dir".to_owned(),
            toml::Value::String(data_dir.display().to_string()),
        ));
    }
    let sources = Sources {
        file: arguments.config.clone(),
        environment: std::env::vars().collect(),
        flags,
    };
    Ok(writeback_config::load(&sources, "WRITEBACK_AGENT_")?)
}

/// The same allocator as the cloud's: every request allocates and frees the same handful of
/// buffers (frames, the sealed password, LDAP messages), which mimalloc serves from thread-local
/// free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    // The crash tests' kill points, set by FAILPOINTS; absent from every other build.
    #[cfg(feature = "kill-points")]
    let _kill_points = fail::FailScenario::setup();
    let arguments = Arguments::parse();
    if let Command::Describe(asked) = &arguments.command {
        asked.print(Arguments::command())?;
        return Ok(());
    }
    let mut config = load_config(&arguments)?;
    writeback_config::init_logging(&config.log)?;
    // The commands that use the directory know every DC, the ones found in DNS included.
    if matches!(
        arguments.command,
        Command::Run | Command::Doctor | Command::Grant { .. }
    ) {
        writeback_agent::discover_domain_controllers(&mut config).await?;
    }
    match &arguments.command {
        // Printed above, before any configuration was read.
        Command::Describe(_) => {}
        Command::Register {
            cloud,
            token,
            token_file,
            pin,
            cloud_ca_file,
            name,
            force,
        } => {
            let token = match (token, token_file) {
                (Some(token), None) => SecretString::from(token.trim().to_owned()),
                (None, Some(path)) => writeback_config::read_secret_file(path)?,
                _ => bail!("give the registration token with --token or --token-file"),
            };
            let trust = match (pin, cloud_ca_file) {
                (Some(pin), None) => {
                    pin.parse::<writeback_tls::Fingerprint>()
                        .context("invalid --pin")?;
                    CloudTrust::Pinned(pin.clone())
                }
                (None, Some(path)) => CloudTrust::CaFile(path.clone()),
                _ => CloudTrust::SystemRoots,
            };
            let name = name.clone().unwrap_or_else(writeback_agent::host_name);
            let state =
                writeback_agent::register(&config, cloud, trust, token, name, *force).await?;
            println!(
                "registered as agent {} for directory {}; identity saved in {}",
                state.agent_id,
                state.directory,
                config.state_path().display()
            );
        }
        Command::Backup { file } => {
            writeback_agent::backup::back_up(&config, file)?;
            println!(
                "agent state written to {}; it holds the agent's private keys",
                file.display()
            );
        }
        Command::Restore { file } => {
            writeback_agent::backup::restore(&config, file)?;
            println!(
                "agent state restored into {}; start the agent with `run`",
                config.data_dir.display()
            );
        }
        Command::Doctor => {
            // Every DC, one by one: the one that fails is the one writeback falls back from.
            let urls = config.directory.dc_urls();
            let mut failed = false;
            for url in &urls {
                if urls.len() > 1 {
                    println!("Domain controller {url}");
                }
                let directory = writeback_agent::one_dc_from_config(&config, url)?;
                let report = writeback_agent::doctor::diagnose(
                    &directory,
                    url,
                    &config.directory.allowed_ous,
                )
                .await;
                print!("{}", report.render());
                failed |= report.failed();
            }
            if failed {
                std::process::exit(1);
            }
        }
        Command::Grant {
            ou,
            apply,
            admin_bind_name,
            admin_password_file,
        } => {
            let directory = writeback_agent::directory_from_config(&config)?;
            let plan = writeback_agent::grant::plan(&directory, ou.as_deref()).await?;
            print!("{}", plan.render());
            if *apply {
                let (Some(admin), Some(password_file)) = (admin_bind_name, admin_password_file)
                else {
                    bail!("--apply needs --admin-bind-name and --admin-password-file");
                };
                let password = writeback_config::read_secret_file(password_file)?;
                let administrator =
                    writeback_agent::directory_as(&config, admin.clone(), password)?;
                writeback_agent::grant::apply(&administrator, &plan).await?;
                println!("applied; run `writeback-agent doctor` to check");
            }
        }
        Command::Events => {
            for event in writeback_proto::events::CATALOGUE {
                println!(
                    "{}  {:<11}  {}",
                    event.id,
                    format!("{:?}", event.severity),
                    event.meaning
                );
            }
        }
        Command::Run => {
            if !writeback_agent::is_registered(&config) {
                bail!("this agent is not registered yet: run `writeback-agent register` first");
            }
            writeback_agent::run(config, shutdown_signal()).await?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
