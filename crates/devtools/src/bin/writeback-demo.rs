//! `cargo xtask demo`: a throwaway Samba AD domain with sample users, `writeback-cloud` on its
//! embedded SQLite database, a registered, connected `writeback-agent`, and self-service on for
//! the sample users, with a local SMTP server (aiosmtpd) whose mail the demo prints as it
//! arrives; all left running until Ctrl-C. Everything lives under one temporary directory and
//! disappears with the demo.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::process::{Child, Command};
use writeback_cli::ApiClient;
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
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
    let listen = std::env::args()
        .skip_while(|argument| argument != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8443".into());
    let work = std::env::temp_dir().join("writeback-demo");
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
    let admin_password_file = work.join("admin-password");
    write_private(&admin_password_file, ADMIN_PASSWORD)?;
    run(
        cloud(&cloud_dir, smtp_port)?
            .args(["admin", "create", "--email", ADMIN_EMAIL, "--password-file"])
            .arg(&admin_password_file),
        "writeback-cloud admin create",
    )
    .await?;
    let token = run(
        cloud(&cloud_dir, smtp_port)?.args(["token", "create", "--directory", DIRECTORY]),
        "writeback-cloud token create",
    )
    .await?;
    let fingerprint: Fingerprint = run(
        cloud(&cloud_dir, smtp_port)?.arg("fingerprint"),
        "writeback-cloud fingerprint",
    )
    .await?
    .parse()?;
    let cloud_process: Child = cloud(&cloud_dir, smtp_port)?
        .args(["serve", "--listen", &listen])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting writeback-cloud")?;
    let url = format!("https://{listen}");
    let client = ApiClient::new(&url, &Trust::Pinned(fingerprint))?;
    // The demo's administrator enrols an authenticator over the API, as `writeback login`
    // does; its key is printed for the person trying the demo to add to their app.
    let (session, authenticator) = wait_for(
        || enrol_administrator(&client, ADMIN_EMAIL, ADMIN_PASSWORD),
        "the cloud to answer",
    )
    .await?;
    let client = ApiClient::new(&url, &Trust::Pinned(fingerprint))?.with_token(session.token);

    let agent_dir = work.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let agent_config = write_agent_config(
        &dc,
        &agent_dir,
        &agent_dir.join("agent.log"),
        &StackOptions::default(),
    )?;
    let token_file = work.join("registration-token");
    write_private(&token_file, &token)?;
    run(
        Command::new(binary("writeback-agent")?)
            .arg("--config")
            .arg(&agent_config)
            .args([
                "register",
                "--cloud",
                &url,
                "--pin",
                &fingerprint.to_string(),
                "--name",
                "demo-agent",
                "--token-file",
            ])
            .arg(&token_file),
        "writeback-agent register",
    )
    .await?;
    let agent_process: Child = Command::new(binary("writeback-agent")?)
        .arg("--config")
        .arg(&agent_config)
        .arg("run")
        .kill_on_drop(true)
        .spawn()
        .context("starting writeback-agent")?;
    wait_for(
        || async {
            let agents = client.agents().await?;
            if agents.iter().any(|agent| agent.connected) {
                Ok(())
            } else {
                bail!("not connected yet")
            }
        },
        "the agent to connect",
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
        "  Directory:           {DIRECTORY} = corp.example.test at {} (agent connected)",
        dc.ldaps_url()
    );
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
        agent_dir.join("agent.log").display()
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
    drop((agent_process, cloud_process, dc));
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
