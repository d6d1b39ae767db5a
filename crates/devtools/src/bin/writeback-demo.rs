//! `cargo xtask demo`: a throwaway Samba AD domain with sample users, `writeback-cloud` on its
//! embedded SQLite database, a registered, connected `writeback-agent`, and self-service on for
//! the sample users, with a local SMTP server (aiosmtpd) whose mail the demo prints as it
//! arrives; all left running until Ctrl-C. Everything lives under one temporary directory and
//! disappears with the demo.
//!
//! `--listen ADDRESS:PORT` (127.0.0.1:8443 by default) and `--work DIR` (a directory it empties
//! and uses) let a test run it beside another. With `--cluster`: three cloud nodes on one throwaway PostgreSQL server, the bus between them,
//! and two agents, each registered with a different node and knowing all three.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::process::{Child, Command};
use writeback_cli::ApiClient;
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_store::postgres_server::PostgresServer;
use writeback_testkit::domain_controller::{ELSEWHERE_OU, STAFF_OU};
use writeback_testkit::mail::MailServer;
use writeback_testkit::portal::PortalClient;
use writeback_testkit::stack::{
    StackOptions, enrol_administrator, write_agent_config, write_private,
};
use writeback_testkit::{DomainController, NewPasswordSettings, NewUser, logs};
use writeback_tls::{Fingerprint, Trust};

const ADMIN_EMAIL: &str = "admin@demo.test";
const ADMIN_PASSWORD: &str = "Demo-Admin-Passw0rd!";
const DIRECTORY: &str = "corp";

struct SampleUser {
    name: &'static str,
    display_name: &'static str,
    password: &'static str,
    container: &'static str,
    protected: bool,
    note: &'static str,
}

const SAMPLE_USERS: &[SampleUser] = &[
    SampleUser {
        name: "alice",
        display_name: "Alice Anders",
        password: "Alice-Start-2026!",
        container: STAFF_OU,
        protected: false,
        note: "in scope",
    },
    SampleUser {
        name: "bob",
        display_name: "Bob Brown",
        password: "Bob-Start-2026!",
        container: STAFF_OU,
        protected: false,
        note: "in scope",
    },
    SampleUser {
        name: "carol",
        display_name: "Carol Chen",
        password: "Carol-Start-2026!",
        container: STAFF_OU,
        protected: false,
        note: "in scope",
    },
    SampleUser {
        name: "dave",
        display_name: "Dave Dunn",
        password: "Dave-Start-2026!",
        container: ELSEWHERE_OU,
        protected: false,
        note: "outside the allowed OUs: refused",
    },
    SampleUser {
        name: "erin-admin",
        display_name: "Erin Admin",
        password: "Erin-Start-2026!",
        container: STAFF_OU,
        protected: true,
        note: "adminCount=1: refused",
    },
];

fn binary(name: &str) -> Result<PathBuf> {
    logs::binary(name)
}

async fn run(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    ensure!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// How the demo's cloud nodes are run: the first node's data directory holds the certificate
/// and secrets key every node presents and uses.
#[derive(Debug, Clone)]
struct Nodes {
    first_dir: PathBuf,
    smtp_port: u16,
    /// The PostgreSQL database every node shares, with `--cluster`.
    database_url: Option<String>,
}

impl Nodes {
    /// `writeback-cloud` as node `number` (1, 2, 3).
    fn cloud(&self, number: usize) -> Result<Command> {
        let data_dir = self.data_dir(number);
        std::fs::create_dir_all(&data_dir)?;
        let mut command = cloud(&data_dir, self.smtp_port)?;
        command.env("WRITEBACK_CLOUD_NODE_NAME", format!("node-{number}"));
        if let Some(url) = &self.database_url {
            command.env("WRITEBACK_CLOUD_DATABASE_URL", url);
        }
        if number > 1 {
            let tls = self.first_dir.join("tls");
            command
                .env("WRITEBACK_CLOUD_TLS_CERTIFICATE", tls.join("cert.pem"))
                .env("WRITEBACK_CLOUD_TLS_PRIVATE_KEY", tls.join("key.pem"))
                .env(
                    "WRITEBACK_CLOUD_SECRETS_KEY_FILE",
                    self.first_dir.join("secrets.key"),
                );
        }
        Ok(command)
    }

    fn data_dir(&self, number: usize) -> PathBuf {
        if number == 1 {
            self.first_dir.clone()
        } else {
            self.first_dir.with_file_name(format!("cloud-{number}"))
        }
    }
}

fn cloud(data_dir: &Path, smtp_port: u16) -> Result<Command> {
    let mut command = Command::new(binary("writeback-cloud")?);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("WRITEBACK_CLOUD_LOG__FORMAT", "text")
        .env("WRITEBACK_CLOUD_LOG__FILE", data_dir.join("cloud.log"))
        .env("WRITEBACK_CLOUD_SMTP__HOST", "127.0.0.1")
        .env("WRITEBACK_CLOUD_SMTP__PORT", smtp_port.to_string())
        .env("WRITEBACK_CLOUD_SMTP__SECURITY", "none")
        .env(
            "WRITEBACK_CLOUD_SMTP__FROM",
            "Writeback demo <writeback@demo.test>",
        );
    Ok(command)
}

/// Self-service for everyone, by a code mailed to a registered address or an authenticator
/// app, one of them enough; unlock without a reset allowed.
fn demo_self_service() -> SelfServiceSettings {
    SelfServiceSettings {
        scope: SelfServiceScope::Everyone,
        methods: vec![
            VerificationMethod::Email,
            VerificationMethod::AuthenticatorApp,
        ],
        methods_required: 1,
        unlock_without_reset: true,
        writeback_enabled: true,
        notify_user_on_reset: true,
        helpdesk: "The demo's helpdesk is you: see the terminal.".into(),
        ..SelfServiceSettings::default()
    }
}

/// Prints every mail the demo's SMTP server receives from now on, as it arrives.
async fn print_mail_as_it_arrives(mail: MailServer) {
    let mut shown = mail.messages().map_or(0, |messages| messages.len());
    loop {
        if let Ok(messages) = mail.messages() {
            for message in messages.iter().skip(shown) {
                println!();
                println!("  ── mail to {}: {}", message.to, message.subject);
                for line in message.body.lines().filter(|line| !line.trim().is_empty()) {
                    println!("     {line}");
                }
            }
            shown = messages.len().max(shown);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let listen: std::net::SocketAddr = std::env::args()
        .skip_while(|argument| argument != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8443".into())
        .parse()
        .context("--listen takes an address and port")?;
    let cluster = std::env::args().any(|argument| argument == "--cluster");
    // Where everything lives; a test gives its own, beside a demo someone may be running.
    let work = std::env::args()
        .skip_while(|argument| argument != "--work")
        .nth(1)
        .map_or_else(
            || std::env::temp_dir().join("writeback-demo"),
            PathBuf::from,
        );
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;

    println!("Provisioning a throwaway Samba AD domain (corp.example.test)...");
    let started = Instant::now();
    let dc = tokio::task::spawn_blocking(DomainController::start).await??;
    let mut admin = dc.admin().await?;
    for user in SAMPLE_USERS {
        let dn = admin
            .create_user(
                &NewUser::new(user.name, user.password)
                    .display_name(user.display_name)
                    .in_container(user.container),
            )
            .await?;
        if user.protected {
            admin.replace(&dn, "adminCount", "1").await?;
        }
    }
    println!(
        "  domain controller ready on {} in {:.0} s",
        dc.ldaps_url(),
        started.elapsed().as_secs_f64()
    );

    let mail = MailServer::start(&work.join("mail")).await?;
    let smtp_port = mail.port;
    let cloud_dir = work.join("cloud");
    std::fs::create_dir_all(&cloud_dir)?;
    // Held for its drop, which stops the server and removes its files.
    let mut postgres = None;
    let database_url = if cluster {
        let server = tokio::task::spawn_blocking(PostgresServer::start).await??;
        let url = server.fresh_database().await?;
        println!(
            "  PostgreSQL for the cluster on 127.0.0.1:{}",
            server.port()
        );
        postgres = Some(server);
        Some(url)
    } else {
        None
    };
    let nodes = Nodes {
        first_dir: cloud_dir.clone(),
        smtp_port,
        database_url,
    };
    let node_count = if cluster { 3 } else { 1 };
    let node_urls: Vec<String> = (0..node_count)
        .map(|offset| {
            let mut address = listen;
            address.set_port(listen.port() + offset as u16);
            format!("https://{address}")
        })
        .collect();
    let admin_password_file = work.join("admin-password");
    write_private(&admin_password_file, ADMIN_PASSWORD)?;
    run(
        nodes
            .cloud(1)?
            .args(["admin", "create", "--email", ADMIN_EMAIL, "--password-file"])
            .arg(&admin_password_file),
        "writeback-cloud admin create",
    )
    .await?;
    let fingerprint: Fingerprint = run(
        nodes.cloud(1)?.arg("fingerprint"),
        "writeback-cloud fingerprint",
    )
    .await?
    .parse()?;
    let mut cloud_processes: Vec<Child> = Vec::new();
    for (index, node_url) in node_urls.iter().enumerate() {
        let address = node_url.trim_start_matches("https://");
        cloud_processes.push(
            nodes
                .cloud(index + 1)?
                .args(["serve", "--listen", address])
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting writeback-cloud")?,
        );
    }
    let url = node_urls[0].clone();
    let client = ApiClient::new(&url, &Trust::Pinned(fingerprint))?;
    // The demo's administrator enrols an authenticator over the API, as `writeback login`
    // does; its key is printed for the person trying the demo to add to their app.
    let (session, authenticator) = wait_for(
        || enrol_administrator(&client, ADMIN_EMAIL, ADMIN_PASSWORD),
        "the cloud to answer",
    )
    .await?;
    let client = ApiClient::new(&url, &Trust::Pinned(fingerprint))?.with_token(session.token);

    // One agent, or on a cluster two, each registered with its own node and knowing them all.
    let agent_count = if cluster { 2 } else { 1 };
    let mut agent_processes: Vec<Child> = Vec::new();
    let mut agent_logs = Vec::new();
    for number in 1..=agent_count {
        let agent_dir = work.join(if number == 1 {
            "agent".to_owned()
        } else {
            format!("agent-{number}")
        });
        std::fs::create_dir_all(&agent_dir)?;
        let agent_log = agent_dir.join("agent.log");
        let agent_config =
            write_agent_config(&dc, &agent_dir, &agent_log, &StackOptions::default())?;
        if cluster {
            let others: Vec<String> = node_urls.iter().map(|url| format!("\"{url}\"")).collect();
            let config = std::fs::read_to_string(&agent_config)?;
            std::fs::write(
                &agent_config,
                format!("cloud_urls = [{}]\n{config}", others.join(", ")),
            )?;
        }
        let token = client.register_agent(&DIRECTORY.parse()?).await?;
        let token_file = agent_dir.join("registration-token");
        write_private(
            &token_file,
            secrecy::ExposeSecret::expose_secret(&token.token),
        )?;
        let register_with = &node_urls[(number - 1) % node_urls.len()];
        run(
            Command::new(binary("writeback-agent")?)
                .arg("--config")
                .arg(&agent_config)
                .args([
                    "register",
                    "--cloud",
                    register_with,
                    "--pin",
                    &fingerprint.to_string(),
                    "--name",
                    &format!("demo-agent-{number}"),
                    "--token-file",
                ])
                .arg(&token_file),
            "writeback-agent register",
        )
        .await?;
        agent_processes.push(
            Command::new(binary("writeback-agent")?)
                .arg("--config")
                .arg(&agent_config)
                .arg("run")
                .kill_on_drop(true)
                .spawn()
                .context("starting writeback-agent")?,
        );
        agent_logs.push(agent_log);
    }
    wait_for(
        || async {
            let agents = client.agents().await?;
            if agents.iter().filter(|agent| agent.connected).count() == agent_count {
                Ok(())
            } else {
                bail!("not connected yet")
            }
        },
        "the agents to connect",
    )
    .await?;

    client
        .update_self_service_settings(&demo_self_service())
        .await
        .context("turning self-service on")?;
    // Alice and Bob have registered an email address, as they would on the portal's account
    // page; then Bob locks himself out.
    for (name, password) in [("alice", "Alice-Start-2026!"), ("bob", "Bob-Start-2026!")] {
        let address = format!("{name}@corp.example.test");
        wait_for(
            || async {
                let mut portal = PortalClient::for_url(&url, fingerprint);
                let answer = portal.sign_in(name, password).await;
                if answer.status.as_u16() != 303 {
                    bail!("{name} could not sign in yet ({})", answer.status);
                }
                portal.register_email(&mail, &address, 1).await;
                Ok::<(), anyhow::Error>(())
            },
            "the sample users to register their email addresses",
        )
        .await?;
    }
    lock_out(&dc, "bob").await?;
    let portal_url = format!("{url}/portal");

    let writeback = binary("writeback")?;
    println!();
    println!("Writeback demo is running.");
    println!();
    println!("  Self-service portal: {portal_url}");
    println!("  Admin console:       {url}/console   (self-signed certificate: accept it once)");
    println!("  Cloud (admin API):   {url}");
    println!("  Certificate pin:     {fingerprint}");
    println!("  Administrator:       {ADMIN_EMAIL} / {ADMIN_PASSWORD}");
    println!(
        "  Authenticator key:   {}   (add it to your authenticator app: every sign-in asks for its code)",
        writeback_cloud::service::totp::base32(&authenticator.key)
    );
    println!(
        "  Directory:           {DIRECTORY} = corp.example.test at {} ({agent_count} agent(s) connected)",
        dc.ldaps_url()
    );
    if cluster {
        println!(
            "  Cluster:             three nodes on one PostgreSQL database, the bus between them:"
        );
        for node in client.nodes().await? {
            let number = node
                .name
                .trim_start_matches("node-")
                .parse::<usize>()
                .unwrap_or(1);
            println!(
                "    {:<8} {}   {} agent(s)",
                node.name,
                node_urls
                    .get(number.saturating_sub(1))
                    .map_or("", String::as_str),
                node.agents
            );
        }
        println!(
            "    Any node serves the portal, the console and the API; stop one and the rest go on."
        );
    }
    println!();
    println!("  Sample users (sAMAccountName / password):");
    for user in SAMPLE_USERS {
        println!("    {:<11} {:<19} {}", user.name, user.password, user.note);
    }
    println!();
    println!("  Reset a password with the CLI:");
    println!(
        "    {} login --url {url} --pin {fingerprint} --email {ADMIN_EMAIL}",
        writeback.display()
    );
    println!(
        "    {} reset {DIRECTORY} alice --unlock",
        writeback.display()
    );
    println!(
        "    {} reset {DIRECTORY} dave        # refused: out of scope",
        writeback.display()
    );
    println!("    {} agents", writeback.display());
    println!();
    println!(
        "  Logs: {} and {}",
        cloud_dir.join("cloud.log").display(),
        agent_logs
            .iter()
            .map(|log| log.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  Try self-service (mail the portal sends is printed below as it arrives):");
    println!("    {portal_url}  > Forgot your password > alice > Email me a code > a new password");
    println!(
        "    {portal_url}  > Unlock your account > bob (locked out by the demo) > Email me a code"
    );
    println!(
        "    {} reset {DIRECTORY} carol --must-change   # an administrator reset; carol changes it at sign-in",
        writeback.display()
    );
    println!();
    println!("  Press Ctrl-C to stop; the domain and all data are removed.");
    tokio::spawn(print_mail_as_it_arrives(mail));
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    drop((agent_processes, cloud_processes, dc, postgres));
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Locks `name` out as three wrong passwords would under a lockout threshold of 3 (a
/// fine-grained policy for that user alone).
async fn lock_out(dc: &DomainController, name: &str) -> Result<()> {
    let settings = NewPasswordSettings {
        name: "demo-lockout".into(),
        min_length: 7,
        complexity: true,
        history_length: 0,
        min_age_days: 0,
        lockout_threshold: 3,
        max_age_days: 42,
    };
    let dn = format!("CN={name},{STAFF_OU}");
    dc.admin()
        .await?
        .create_password_settings(&settings, &dn)
        .await?;
    for attempt in 0..3 {
        let _ = dc.bind_as(name, &format!("Wrong-Demo-{attempt}!")).await?;
    }
    Ok(())
}

async fn wait_for<T, F, Fut, E>(mut attempt: F, what: &str) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() > deadline => bail!("gave up waiting for {what}: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
