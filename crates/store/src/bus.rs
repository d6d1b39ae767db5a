//! The bus between cloud nodes: PostgreSQL's `LISTEN`/`NOTIFY` on the database the nodes already
//! share. A message is a channel name and a text payload of at most [`MAX_PAYLOAD_BYTES`]; it
//! reaches every node listening on the channel when it is sent, and no one else, at most once.
//! What the messages mean is the cloud's business.

use sqlx::postgres::PgListener;

use crate::{Backend, Store, StoreError};

/// PostgreSQL refuses longer payloads (its limit is 8,000 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 7_900;

/// Messages arriving on the channels a node listens on.
#[derive(Debug)]
pub struct BusListener {
    listener: PgListener,
}

impl BusListener {
    /// The next message: its channel and payload. When the connection drops, it reconnects and
    /// listens again; what was sent meanwhile is lost, as a node that was down would lose it.
    pub async fn next(&mut self) -> Result<(String, String), StoreError> {
        let notification = self.listener.recv().await?;
        Ok((
            notification.channel().to_owned(),
            notification.payload().to_owned(),
        ))
    }
}

impl Store {
    /// Whether this store can carry messages between nodes: only a shared PostgreSQL database
    /// can.
    pub fn has_bus(&self) -> bool {
        self.backend == Backend::Postgres && self.postgres_url.is_some()
    }

    /// Sends `payload` to the nodes listening on `channel`.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if !self.has_bus() {
            return Err(StoreError::Refused(
                "only a PostgreSQL store carries messages between nodes".into(),
            ));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::Refused(format!(
                "a bus message of {} bytes is over the limit of {MAX_PAYLOAD_BYTES}",
                payload.len()
            )));
        }
        // `pg_notify` answers `void`, which the `Any` driver cannot decode: count it instead.
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_notify($1, $2)) AS sent")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Listens on `channels`, on a connection of its own.
    pub async fn listen(&self, channels: &[&str]) -> Result<BusListener, StoreError> {
        let Some(url) = &self.postgres_url else {
            return Err(StoreError::Refused(
                "only a PostgreSQL store carries messages between nodes".into(),
            ));
        };
        let mut listener = PgListener::connect(url).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(BusListener { listener })
    }
}

#[cfg(test)]
mod tests {
    use crate::postgres_server::PostgresServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_reaches_the_listeners_of_its_channel_only() {
        let server = PostgresServer::shared().unwrap();
        let store = server.fresh_store().await.unwrap();
        assert!(store.has_bus());
        let mut first = store.listen(&["node_a"]).await.unwrap();
        let mut second = store.listen(&["node_b", "everyone"]).await.unwrap();
        store.publish("node_a", "for a").await.unwrap();
        store.publish("everyone", "for all").await.unwrap();
        assert_eq!(
            first.next().await.unwrap(),
            ("node_a".to_owned(), "for a".to_owned())
        );
        assert_eq!(
            second.next().await.unwrap(),
            ("everyone".to_owned(), "for all".to_owned())
        );
        let too_long = "x".repeat(super::MAX_PAYLOAD_BYTES + 1);
        assert!(store.publish("node_a", &too_long).await.is_err());
    }

    #[tokio::test]
    async fn sqlite_has_no_bus() {
        let store = crate::Store::in_memory().await.unwrap();
        assert!(!store.has_bus());
        assert!(store.publish("node_a", "hello").await.is_err());
    }
}
