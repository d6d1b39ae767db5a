//! A DNS name server for tests: Debian's `dnsmasq` on a loopback port of its own, answering the
//! SRV records `_ldap._tcp.dc._msdcs.<domain>` with the test DCs, as a domain's own DNS answers
//! them. A watchdog stops it when the test process ends, however it ends.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::domain_controller::{DNS_DOMAIN, DomainController};

#[derive(Debug)]
pub struct NameServer {
    pub address: SocketAddr,
    /// Holds the watchdog's standard input open; closing it stops dnsmasq.
    _watchdog: Mutex<Child>,
}

impl NameServer {
    /// Serves one SRV record per DC, with the priority given (lower is tried first). Each
    /// record's target is the DC's address written as a name, which the agent connects to as
    /// it is, so that no address record is needed.
    ///
    /// dnsmasq listens on TCP as well as UDP, and a port free for UDP may be some connection's
    /// TCP port, when dnsmasq exits at once: it is then started again on another port.
    pub fn start(domain_controllers: &[(&DomainController, u16)]) -> Result<NameServer> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::start_on(free_udp_and_tcp_port()?, domain_controllers) {
                Err(error) if attempts < 5 && error.is::<Exited>() => {
                    tracing::debug!(%error, "dnsmasq did not start; trying another port");
                }
                result => return result,
            }
        }
    }

    fn start_on(port: u16, domain_controllers: &[(&DomainController, u16)]) -> Result<NameServer> {
        let mut arguments = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--bind-interfaces".to_owned(),
            "--listen-address=127.0.0.1".to_owned(),
            format!("--port={port}"),
            "--pid-file=".to_owned(),
            "--user=root".to_owned(),
        ];
        for (dc, priority) in domain_controllers {
            arguments.push(format!(
                "--srv-host=_ldap._tcp.dc._msdcs.{DNS_DOMAIN},{},389,{priority},100",
                dc.address
            ));
        }
        // The watchdog exits with dnsmasq, so that an early exit shows; its standard input goes
        // to the background reader through fd 3, as a background job's own is /dev/null.
        let script = r#"dnsmasq "$@" >/dev/null 2>&1 &
server=$!
trap '' INT HUP TERM
exec 3<&0
(cat <&3 >/dev/null; kill "$server" 2>/dev/null) &
wait "$server""#;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .args(&arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq; is the dnsmasq-base package installed?")?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let server = NameServer {
            address,
            _watchdog: Mutex::new(watchdog),
        };
        server.wait_until_answering()?;
        Ok(server)
    }

    fn wait_until_answering(&self) -> Result<()> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let query = writeback_directory::discovery::srv_query(
            1,
            &writeback_directory::discovery::dc_record_name(DNS_DOMAIN),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answer = [0u8; 512];
        loop {
            let exited = self
                ._watchdog
                .lock()
                .map_err(|_| anyhow::anyhow!("the watchdog's lock is poisoned"))?
                .try_wait()?
                .is_some();
            if exited {
                return Err(Exited.into());
            }
            socket.send_to(&query, self.address)?;
            if socket.recv(&mut answer).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dnsmasq did not answer on {} within 10 s", self.address);
            }
        }
    }
}

/// dnsmasq exited before it answered, as it does when its port is taken.
#[derive(Debug)]
struct Exited;

impl std::fmt::Display for Exited {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("dnsmasq exited before it answered (its port was taken?)")
    }
}

impl std::error::Error for Exited {}

/// A loopback port that is free for both UDP and TCP as it is chosen.
fn free_udp_and_tcp_port() -> Result<u16> {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}
