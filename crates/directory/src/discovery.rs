//! Finding a domain's DCs in DNS: the SRV records `_ldap._tcp.dc._msdcs.<domain>` that every AD
//! DC registers for itself. The query and the answer are built and read here (RFC 1035 and RFC
//! 2782) and sent over UDP to a name server: the configured one, or the first of
//! `/etc/resolv.conf`. The answer is untrusted input; reading it never panics and never loops.

use std::net::SocketAddr;
use std::time::Duration;

use crate::DirectoryError;

/// The record type of a service location (RFC 2782).
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// A name may be followed through at most this many compression pointers.
const MAX_POINTERS: usize = 16;
/// DNS over UDP answers in at most this many bytes without extensions.
const MAX_UDP_ANSWER: usize = 4096;

/// One DC a domain announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

fn malformed(problem: &str) -> DirectoryError {
    DirectoryError::Discovery(format!("the name server's answer is malformed: {problem}"))
}

/// The DNS name whose SRV records list `domain`'s DCs.
pub fn dc_record_name(domain: &str) -> String {
    format!("_ldap._tcp.dc._msdcs.{}", domain.trim_end_matches('.'))
}

/// A query for the SRV records of `name`, with the id `id`, recursion desired.
pub fn srv_query(id: u16, name: &str) -> Result<Vec<u8>, DirectoryError> {
    let mut query = Vec::with_capacity(18 + name.len());
    query.extend_from_slice(&id.to_be_bytes());
    // Flags: a standard query, recursion desired; one question.
    query.extend_from_slice(&[0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|length| (1..=63).contains(length))
            .ok_or_else(|| DirectoryError::Configuration(format!("{name} is not a DNS name")))?;
        query.push(length);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&TYPE_SRV.to_be_bytes());
    query.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(query)
}

/// Reads big-endian numbers and names out of one DNS message.
struct Reader<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, count: usize) -> Result<&'a [u8], DirectoryError> {
        let end = self
            .at
            .checked_add(count)
            .filter(|end| *end <= self.message.len())
            .ok_or_else(|| malformed("it ends early"))?;
        let bytes = &self.message[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DirectoryError> {
        let bytes = self.bytes(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A name at the reader's position, following compression pointers, and the reader moved
    /// past it.
    fn name(&mut self) -> Result<String, DirectoryError> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut resume_at = None;
        let mut pointers = 0;
        loop {
            let length = *self
                .message
                .get(at)
                .ok_or_else(|| malformed("a name runs past the end"))?;
            match length {
                0 => {
                    at += 1;
                    break;
                }
                length if length & 0xC0 == 0xC0 => {
                    let low = *self
                        .message
                        .get(at + 1)
                        .ok_or_else(|| malformed("a name pointer is cut off"))?;
                    pointers += 1;
                    if pointers > MAX_POINTERS {
                        return Err(malformed("a name's pointers go round"));
                    }
                    resume_at.get_or_insert(at + 2);
                    at = usize::from(u16::from_be_bytes([length & 0x3F, low]));
                }
                length if length & 0xC0 == 0 => {
                    let start = at + 1;
                    let end = start + usize::from(length);
                    let label = self
                        .message
                        .get(start..end)
                        .ok_or_else(|| malformed("a label runs past the end"))?;
                    labels.push(String::from_utf8_lossy(label).into_owned());
                    at = end;
                }
                _ => return Err(malformed("a label has an unknown kind")),
            }
        }
        self.at = resume_at.unwrap_or(at);
        Ok(labels.join("."))
    }
}

/// The SRV records in `message`, the answer to the query with the id `id`. A name that does not
/// exist answers none.
pub fn parse_srv_answer(id: u16, message: &[u8]) -> Result<Vec<SrvTarget>, DirectoryError> {
    let mut reader = Reader { message, at: 0 };
    if reader.u16()? != id {
        return Err(malformed("it answers another query"));
    }
    let flags = reader.u16()?;
    if flags & 0x8000 == 0 {
        return Err(malformed("it is a query, not an answer"));
    }
    match flags & 0x000F {
        0 => {}
        3 => return Ok(Vec::new()),
        code => {
            return Err(DirectoryError::Discovery(format!(
                "the name server refused the query (response code {code})"
            )));
        }
    }
    let questions = reader.u16()?;
    let answers = reader.u16()?;
    reader.bytes(4)?;
    for _ in 0..questions {
        reader.name()?;
        reader.bytes(4)?;
    }
    let mut targets = Vec::new();
    for _ in 0..answers {
        reader.name()?;
        let record_type = reader.u16()?;
        reader.u16()?;
        reader.bytes(4)?;
        let length = usize::from(reader.u16()?);
        let end = reader.at + length;
        if record_type == TYPE_SRV {
            let priority = reader.u16()?;
            let weight = reader.u16()?;
            let port = reader.u16()?;
            let target = reader.name()?;
            if reader.at > end {
                return Err(malformed("a record is longer than it says"));
            }
            targets.push(SrvTarget {
                priority,
                weight,
                port,
                target,
            });
        }
        reader.at = end;
        if reader.at > message.len() {
            return Err(malformed("a record runs past the end"));
        }
    }
    Ok(targets)
}

/// The DCs' LDAPS addresses, in the order to try them: by priority, and the heavier first
/// among equals (a fixed order rather than RFC 2782's weighted draw, so that every start of
/// the agent tries the same DC first). A target of "." means the domain has none.
pub fn ldaps_urls(mut targets: Vec<SrvTarget>) -> Vec<String> {
    targets.sort_by(|first, second| {
        (
            first.priority,
            std::cmp::Reverse(first.weight),
            &first.target,
        )
            .cmp(&(
                second.priority,
                std::cmp::Reverse(second.weight),
                &second.target,
            ))
    });
    let mut urls: Vec<String> = Vec::new();
    for target in targets {
        let host = target.target.trim_end_matches('.');
        if host.is_empty() {
            continue;
        }
        let url = format!("ldaps://{host}:636");
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// The first name server of `/etc/resolv.conf`.
pub fn system_name_server() -> Option<SocketAddr> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    resolv.lines().find_map(|line| {
        let address = line.trim().strip_prefix("nameserver")?.trim();
        let ip: std::net::IpAddr = address.parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// Asks `server` which DCs `domain` has: their LDAPS addresses, in the order to try them.
pub async fn discover_domain_controllers(
    domain: &str,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Vec<String>, DirectoryError> {
    let unreachable = |detail: String| {
        DirectoryError::Discovery(format!("cannot ask the name server {server}: {detail}"))
    };
    let id = u16::from_be_bytes(
        writeback_proto::ids::random_bytes::<2>()
            .map_err(|error| DirectoryError::Discovery(error.to_string()))?,
    );
    let query = srv_query(id, &dc_record_name(domain))?;
    let bind = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    socket
        .connect(server)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    socket
        .send(&query)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    let mut answer = vec![0; MAX_UDP_ANSWER];
    let received = tokio::time::timeout(timeout, socket.recv(&mut answer))
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|error| unreachable(error.to_string()))?;
    let urls = ldaps_urls(parse_srv_answer(id, &answer[..received])?);
    if urls.is_empty() {
        return Err(DirectoryError::Discovery(format!(
            "{server} knows no DC of {domain} (no SRV record {})",
            dc_record_name(domain)
        )));
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query` with `records` (priority, weight, port, target), the target written
    /// as a pointer to the question's name when it is `None`.
    fn answer(query: &[u8], records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
        let mut message = query.to_vec();
        message[2] = 0x81;
        message[3] = 0x80;
        message[7] = records.len() as u8;
        for (priority, weight, port, target) in records {
            // The owner name points at the question's name, at offset 12.
            message.extend_from_slice(&[0xC0, 12]);
            message.extend_from_slice(&TYPE_SRV.to_be_bytes());
            message.extend_from_slice(&CLASS_IN.to_be_bytes());
            message.extend_from_slice(&600u32.to_be_bytes());
            let mut data = Vec::new();
            for number in [priority, weight, port] {
                data.extend_from_slice(&number.to_be_bytes());
            }
            for label in target.split('.') {
                data.push(label.len() as u8);
                data.extend_from_slice(label.as_bytes());
            }
            data.push(0);
            message.extend_from_slice(&(data.len() as u16).to_be_bytes());
            message.extend_from_slice(&data);
        }
        message
    }

    #[test]
    fn an_answer_lists_the_dcs_by_priority_then_weight() {
        let query = srv_query(7, &dc_record_name("corp.example.com")).unwrap();
        let message = answer(
            &query,
            &[
                (10, 50, 389, "dc3.corp.example.com"),
                (0, 10, 389, "dc2.corp.example.com"),
                (0, 90, 389, "dc1.corp.example.com"),
            ],
        );
        let targets = parse_srv_answer(7, &message).unwrap();
        assert_eq!(targets.len(), 3);
        assert_eq!(
            ldaps_urls(targets),
            [
                "ldaps://dc1.corp.example.com:636",
                "ldaps://dc2.corp.example.com:636",
                "ldaps://dc3.corp.example.com:636"
            ]
        );
    }

    #[test]
    fn an_answer_to_another_query_or_a_loop_of_pointers_is_refused() {
        let query = srv_query(7, "_ldap._tcp.dc._msdcs.corp").unwrap();
        let message = answer(&query, &[(0, 0, 389, "dc1")]);
        assert!(parse_srv_answer(8, &message).is_err());
        let mut looping = message.clone();
        // The owner name's pointer points at itself.
        let owner = query.len();
        looping[owner] = 0xC0;
        looping[owner + 1] = owner as u8;
        assert!(parse_srv_answer(7, &looping).is_err());
        let mut missing = query.clone();
        missing[2] = 0x81;
        missing[3] = 0x83;
        assert_eq!(parse_srv_answer(7, &missing).unwrap(), Vec::new());
    }

    #[test]
    fn a_name_that_is_not_a_dns_name_is_refused_before_any_query() {
        assert!(srv_query(1, "corp..example").is_err());
        assert!(srv_query(1, &"x".repeat(64)).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Whatever bytes a name server sends, reading them ends, without a panic.
            #[test]
            fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), id in any::<u16>()) {
                let _ = parse_srv_answer(id, &bytes);
            }

            /// A well-formed answer with damage anywhere is read or refused, never a panic; when
            /// read, every target came from it.
            #[test]
            fn a_damaged_answer_is_read_or_refused(position in 0usize..200, value in any::<u8>()) {
                let query = srv_query(9, "_ldap._tcp.dc._msdcs.corp.example.com").unwrap();
                let mut message = super::answer(&query, &[(0, 0, 389, "dc1.corp.example.com"), (1, 5, 389, "dc2.corp.example.com")]);
                if position < message.len() {
                    message[position] = value;
                }
                let _ = parse_srv_answer(9, &message);
            }

            /// Every name made of valid labels makes a query whose question reads back.
            #[test]
            fn a_query_names_what_it_asks(labels in proptest::collection::vec("[a-z0-9_-]{1,20}", 1..6)) {
                let name = labels.join(".");
                let query = srv_query(3, &name).unwrap();
                let mut reader = Reader { message: &query, at: 12 };
                prop_assert_eq!(reader.name().unwrap(), name);
            }
        }
    }
}
