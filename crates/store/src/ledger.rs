//! Every request id a cluster's nodes were sent, for a retry that enters another node than its
//! first attempt: which node owns the request, what it was, and how far it got. The operation is
//! described as the cloud describes it (a fingerprint, the user, the kind; JSON where it is a
//! structure); no secret is ever here.

use sqlx::Row;
use writeback_proto::time::UnixMillis;

use crate::{Store, StoreError, from_millis, millis};

/// One request id as the cluster remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRecord {
    pub request_id: String,
    /// The node the request entered, which waits for it and takes it over.
    pub node_id: String,
    pub fingerprint: String,
    pub user_ref: String,
    pub kind: String,
    pub agent_id: String,
    pub deadline: UnixMillis,
    /// What the agent said it was about to overwrite.
    pub about_to_write: Option<String>,
    /// The verdict a retry must get again.
    pub verdict: Option<String>,
    pub sent_at: UnixMillis,
}

const COLUMNS: &str = "request_id, node_id, fingerprint, user_ref, kind, agent_id, deadline, \
     about_to_write, verdict, sent_at";

fn record(row: &sqlx::any::AnyRow) -> LedgerRecord {
    LedgerRecord {
        request_id: row.get("request_id"),
        node_id: row.get("node_id"),
        fingerprint: row.get("fingerprint"),
        user_ref: row.get("user_ref"),
        kind: row.get("kind"),
        agent_id: row.get("agent_id"),
        deadline: from_millis(Some(row.get("deadline"))).unwrap_or(UnixMillis(0)),
        about_to_write: row.get("about_to_write"),
        verdict: row.get("verdict"),
        sent_at: from_millis(Some(row.get("sent_at"))).unwrap_or(UnixMillis(0)),
    }
}

impl Store {
    /// Records a request sent to an agent. A resend of a known id keeps what the earlier agent
    /// said it was about to overwrite, and its verdict; ids sent before `forget_before` go.
    pub async fn record_request(
        &self,
        record: &LedgerRecord,
        forget_before: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM request_ledger WHERE sent_at < $1")
            .bind(millis(forget_before))
            .execute(&self.pool)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO request_ledger ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (request_id) DO UPDATE SET node_id = excluded.node_id, \
               agent_id = excluded.agent_id, deadline = excluded.deadline"
        ))
        .bind(&record.request_id)
        .bind(&record.node_id)
        .bind(&record.fingerprint)
        .bind(&record.user_ref)
        .bind(&record.kind)
        .bind(&record.agent_id)
        .bind(millis(record.deadline))
        .bind(&record.about_to_write)
        .bind(&record.verdict)
        .bind(millis(record.sent_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn record_about_to_write(
        &self,
        request_id: &str,
        about_to_write: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE request_ledger SET about_to_write = $1 WHERE request_id = $2")
            .bind(about_to_write)
            .bind(request_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record_verdict(&self, request_id: &str, verdict: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE request_ledger SET verdict = $1 WHERE request_id = $2")
            .bind(verdict)
            .bind(request_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn request_record(
        &self,
        request_id: &str,
    ) -> Result<Option<LedgerRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM request_ledger WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(record))
    }

    /// Makes `to_node` the owner of a request `from_node` owned, unless another node did so
    /// first: `true` for the one node that takes it over.
    pub async fn claim_request(
        &self,
        request_id: &str,
        from_node: &str,
        to_node: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE request_ledger SET node_id = $1 WHERE request_id = $2 AND node_id = $3",
        )
        .bind(to_node)
        .bind(request_id)
        .bind(from_node)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(request_id: &str, node: &str, at: u64) -> LedgerRecord {
        LedgerRecord {
            request_id: request_id.into(),
            node_id: node.into(),
            fingerprint: "reset_password:jdoe".into(),
            user_ref: "{\"logon_name\":\"jdoe\"}".into(),
            kind: "reset_password".into(),
            agent_id: "agent-1".into(),
            deadline: UnixMillis(at + 30_000),
            about_to_write: None,
            verdict: None,
            sent_at: UnixMillis(at),
        }
    }

    on_both_databases! {
        async fn a_request_is_remembered_taken_over_by_one_node_and_forgotten_after_its_time(store: Store) {
            store.record_request(&sent("r1", "node-a", 1_000), UnixMillis(0)).await.unwrap();
            store.record_about_to_write("r1", "{\"version\":3}").await.unwrap();
            // A resend keeps what the first agent said, and moves the request to its new agent.
            let resent = LedgerRecord { agent_id: "agent-2".into(), ..sent("r1", "node-a", 2_000) };
            store.record_request(&resent, UnixMillis(0)).await.unwrap();
            let held = store.request_record("r1").await.unwrap().unwrap();
            assert_eq!(held.about_to_write.as_deref(), Some("{\"version\":3}"));
            assert_eq!((held.agent_id.as_str(), held.sent_at), ("agent-2", UnixMillis(1_000)));

            // Two nodes take it over at once: one does.
            let claims: Vec<_> = ["node-b", "node-c"]
                .into_iter()
                .map(|node| {
                    let store = store.clone();
                    tokio::spawn(async move { store.claim_request("r1", "node-a", node).await.unwrap() })
                })
                .collect();
            let mut won = 0;
            for claim in claims {
                won += usize::from(claim.await.unwrap());
            }
            assert_eq!(won, 1);

            store.record_verdict("r1", "{\"result\":\"success\"}").await.unwrap();
            assert!(store.request_record("r1").await.unwrap().unwrap().verdict.is_some());
            store.record_request(&sent("r2", "node-a", 3_601_000), UnixMillis(1_001)).await.unwrap();
            assert_eq!(store.request_record("r1").await.unwrap(), None);
            assert!(store.request_record("unknown").await.unwrap().is_none());
        }
    }
}
