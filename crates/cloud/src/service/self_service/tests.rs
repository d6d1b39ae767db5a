//! The self-service rules at the core's boundary: anti-enumeration, limits under parallel
//! requests, proof counting, scope and step order. Each test runs on an in-memory store, an
//! in-memory mail outbox and a relay with a stand-in agent task, so a rule is checked in
//! milliseconds without a browser or a domain controller. What a browser must show stays in the
//! browser suites.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::{mpsc, watch};
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_proto::frame::{AgentStatus, CloudMessage, LockoutPolicy};
use writeback_proto::identity::IdentityPublicKey;
use writeback_proto::ids::{AgentId, DirectoryName, RequestId};
use writeback_proto::operation::{OperationKind, Response, UserRef, Verdict};
use writeback_proto::result::{OutcomeWarning, ResultCode};
use writeback_proto::sealing::SealingKeyPair;
use writeback_proto::session::AuthenticatedAgent;
use writeback_proto::sync::{
    ObjectAnchor, SyncBatch, SyncChange, SyncCursor, SyncPhase, SyncedGroup, SyncedUser,
};
use writeback_proto::time::UnixMillis;
use writeback_store::{AuditFilter, NewAgent, RegisteredMethod, Store};

use super::accounts::save_method;
use super::proof::{ProofAnswer, StoredQuestion};
use super::recovery::{
    self, FinalOutcome, FlowHandle, Identifier, Methods, NotYet, PasswordRefusal, ProofStep,
};
use super::registration::{self, Confirmation};
use super::sessions::{self, SIGN_IN_FLOOR, SessionHandle, SignIn};
use super::state::{PortalAccount, PortalState, Purpose};
use super::stop::Stop;
use crate::config::{CloudConfig, RateLimit};
use crate::service::auth::hash_password;
use crate::service::hashing::HashingPool;
use crate::service::notify::{Mailer, Outbox};
use crate::service::relay::{AgentConnection, Relay};
use crate::service::screening::PasswordScreen;
use crate::service::secrets::SecretKeys;
use crate::service::state::AppState;

const QUESTIONS: [&str; 4] = [
    "First street?",
    "First teacher?",
    "Favourite dish?",
    "First pet?",
];

/// The answers [`Core::register_questions`] registers.
const RIGHT: [&str; 3] = ["answer 0", "answer 1", "answer 2"];

/// What the stand-in agent received: the kind and user of each request, in order.
type Received = Arc<Mutex<Vec<(OperationKind, UserRef)>>>;

/// One cloud core with one directory, `corp`, served by one stand-in agent.
struct Core {
    state: AppState,
    outbox: Outbox,
    received: Received,
    /// The answers the agent gives, in order; success once they run out.
    answers: Arc<Mutex<VecDeque<Verdict>>>,
    connection: AgentConnection,
    _stopping: watch::Sender<bool>,
}

fn corp() -> DirectoryName {
    "corp".parse().unwrap()
}

fn anchor(index: u8) -> ObjectAnchor {
    let mut bytes = [0u8; 16];
    bytes[0] = index;
    ObjectAnchor::from_bytes(bytes)
}

fn user(index: u8, name: &str, enabled: bool) -> SyncChange {
    SyncChange::User(SyncedUser {
        anchor: anchor(index),
        sid: None,
        sam_account_name: name.into(),
        user_principal_name: Some(format!("{name}@corp.example")),
        mail: None,
        display_name: Some(format!("{name} Example")),
        given_name: None,
        surname: None,
        distinguished_name: format!("CN={name},OU=Staff,DC=corp"),
        enabled,
        locked_out: false,
        password_last_set: Some(UnixMillis(1)),
        must_change_password: false,
        password_never_expires: false,
        password_expiry: writeback_proto::sync::PasswordExpiry::Unknown,
        protected: false,
    })
}

fn settings() -> SelfServiceSettings {
    SelfServiceSettings {
        scope: SelfServiceScope::Everyone,
        methods: vec![
            VerificationMethod::Email,
            VerificationMethod::SecurityQuestions,
            VerificationMethod::AuthenticatorApp,
        ],
        methods_required: 1,
        security_questions: QUESTIONS
            .iter()
            .map(|question| (*question).into())
            .collect(),
        questions_asked: 3,
        unlock_without_reset: true,
        writeback_enabled: true,
        ..SelfServiceSettings::default()
    }
}

impl Core {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Users alice (1) and dave (4, disabled) in corp, and a group "Staff" holding alice only.
    async fn start_with(configure: impl FnOnce(&mut CloudConfig)) -> Self {
        let mut config = CloudConfig::default();
        configure(&mut config);
        let store = Store::in_memory().await.unwrap();
        let now = UnixMillis::now();
        let directory = store.ensure_directory(&corp(), now).await.unwrap();
        let agent_id = AgentId::generate().unwrap();
        store
            .create_registration_token(b"token", directory.id, now, UnixMillis(u64::MAX / 2))
            .await
            .unwrap();
        store
            .redeem_registration_token(
                b"token",
                &NewAgent {
                    agent_id,
                    name: "stand-in".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    identity_key: IdentityPublicKey([7; 32]),
                },
                now,
            )
            .await
            .unwrap();
        let changes = vec![
            user(1, "alice", true),
            user(4, "dave", false),
            SyncChange::Group(SyncedGroup {
                anchor: anchor(9),
                sid: None,
                name: "Staff".into(),
                distinguished_name: "CN=Staff,OU=Staff,DC=corp".into(),
            }),
            SyncChange::Members {
                group: anchor(9),
                members: vec![anchor(1)],
                replace: true,
            },
        ];
        let batch = SyncBatch {
            sequence: 1,
            changes,
            cursor: SyncCursor {
                server: "dc1".into(),
                generation: 1,
                phase: SyncPhase::polled_from(1),
            },
            completes_full_sync: true,
            completes_reconciliation: false,
        };
        store.apply_sync_batch(&corp(), &batch, now).await.unwrap();
        let (mailer, outbox) = Mailer::outbox().unwrap();
        let (stopping_sender, stopping) = watch::channel(false);
        let portal = PortalState::with_capacity(config.portal_session(), 1000, 1000);
        let state = AppState {
            store,
            relay: Arc::new(Relay::default()),
            cluster: None,
            config: Arc::new(config),
            metrics: Arc::default(),
            fingerprint: writeback_tls::Fingerprint([0; 32]),
            mailer: Some(mailer),
            sms: None,
            portal: Arc::new(portal),
            secrets: Arc::new(SecretKeys::generate().unwrap()),
            screen: Arc::new(
                PasswordScreen::open(
                    std::env::temp_dir().join("writeback-core-tests-no-breached-list"),
                )
                .unwrap(),
            ),
            hashing: HashingPool::new(2, 64).unwrap(),
            metrics_token: None,
            stopping,
        };
        let (received, answers, connection) = stand_in_agent(&state, agent_id);
        let core = Self {
            state,
            outbox,
            received,
            answers,
            connection,
            _stopping: stopping_sender,
        };
        core.configure(settings()).await;
        core
    }

    async fn configure(&self, settings: SelfServiceSettings) {
        let actor = crate::service::audit::Actor::local_command("test");
        super::settings::apply(&self.state, &actor, settings)
            .await
            .unwrap();
    }

    fn alice(&self) -> PortalAccount {
        self.account(1, "alice")
    }

    fn account(&self, index: u8, name: &str) -> PortalAccount {
        PortalAccount {
            directory: corp(),
            anchor: anchor(index),
            sam_account_name: name.into(),
            display_name: Some(format!("{name} Example")),
        }
    }

    /// Registers the first three questions, answered as in [`RIGHT`].
    async fn register_questions(&self, account: &PortalAccount) {
        let stored: Vec<StoredQuestion> = (0..3)
            .map(|index| StoredQuestion {
                question: QUESTIONS[index].into(),
                answer_hash: hash_password(&SecretString::from(format!("answer {index}"))).unwrap(),
            })
            .collect();
        self.register(
            account,
            VerificationMethod::SecurityQuestions,
            None,
            serde_json::to_vec(&stored).unwrap(),
        )
        .await;
    }

    async fn register(
        &self,
        account: &PortalAccount,
        method: VerificationMethod,
        value: Option<&str>,
        secret: Vec<u8>,
    ) {
        let method = RegisteredMethod {
            method: method.as_str().into(),
            value: value.map(str::to_owned),
            secret: Some(secret),
            registered_at: UnixMillis::now(),
        };
        save_method(&self.state, account, method).await.unwrap();
    }

    async fn begin(&self, name: &str, purpose: Purpose) -> Result<FlowHandle, Stop> {
        let token = recovery::begin(
            &self.state,
            purpose,
            Identifier::parse(name).unwrap(),
            &None,
            UnixMillis::now(),
        )
        .await?;
        FlowHandle::open(
            &self.state,
            secrecy::ExposeSecret::expose_secret(&token),
            UnixMillis::now(),
        )
        .await
    }

    async fn reopen(&self, handle: &FlowHandle) -> Result<FlowHandle, Stop> {
        let flow = self
            .state
            .portal
            .flow(&handle.key, UnixMillis::now())
            .await
            .ok_or(Stop::Ended)?;
        Ok(FlowHandle {
            key: handle.key.clone(),
            flow,
        })
    }

    async fn prove(&self, handle: &FlowHandle, answer: ProofAnswer) -> Result<ProofStep, Stop> {
        recovery::check_proof(&self.state, &handle.key, &answer, &None, UnixMillis::now()).await
    }

    async fn choose(&self, handle: &FlowHandle, method: VerificationMethod) {
        let chosen = recovery::choose_method(
            &self.state,
            handle,
            method.as_str(),
            &None,
            UnixMillis::now(),
        )
        .await
        .unwrap();
        assert!(chosen.is_some(), "{method:?} could not be chosen");
    }

    async fn audit_results(&self, action: &str) -> Vec<String> {
        let entries = self
            .state
            .store
            .audit_entries(&AuditFilter {
                limit: 1000,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        entries
            .into_iter()
            .filter(|entry| entry.event.action == action)
            .map(|entry| entry.event.result_code)
            .collect()
    }

    fn received(&self) -> Vec<(OperationKind, UserRef)> {
        self.received.lock().unwrap().clone()
    }

    fn last_code(&self) -> String {
        let mail = self.outbox.messages().pop().expect("a mailed code");
        mail.body
            .split_whitespace()
            .find(|word| {
                word.trim_end_matches('.').len() == 6
                    && word
                        .trim_end_matches('.')
                        .chars()
                        .all(|c| c.is_ascii_digit())
            })
            .map(|word| word.trim_end_matches('.').to_owned())
            .expect("a six-digit code in the mail")
    }
}

/// Connects a stand-in agent for corp that reports a reachable directory and answers each
/// request with the next queued answer (success when none is queued).
fn stand_in_agent(
    state: &AppState,
    agent_id: AgentId,
) -> (Received, Arc<Mutex<VecDeque<Verdict>>>, AgentConnection) {
    let (sender, mut outbound) = mpsc::channel(64);
    let agent = AuthenticatedAgent {
        agent_id,
        version: env!("CARGO_PKG_VERSION").into(),
        sealing_key: SealingKeyPair::generate().public_key().clone(),
    };
    let connection = state.relay.connect(&agent, corp(), sender);
    state.relay.report_status(&connection, reachable(true));
    let received: Received = Arc::default();
    let answers: Arc<Mutex<VecDeque<Verdict>>> = Arc::default();
    let relay = state.relay.clone();
    let answering = connection.clone();
    let (kept, queued) = (received.clone(), answers.clone());
    tokio::spawn(async move {
        while let Some(message) = outbound.recv().await {
            let CloudMessage::Request(request) = message else {
                continue;
            };
            kept.lock()
                .unwrap()
                .push((request.operation.kind(), request.operation.user().clone()));
            let verdict = queued
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| ResultCode::Success.into());
            relay.deliver(
                &answering,
                Response {
                    request_id: request.request_id,
                    result: verdict.result,
                    warnings: verdict.warnings,
                    trace: None,
                },
            );
        }
    });
    (received, answers, connection)
}

/// What the stand-in agent reports: the directory reachable or not, and a lockout after 10
/// wrong passwords, so sign-ins have an allowance of 9.
fn reachable(reachable: bool) -> AgentStatus {
    AgentStatus {
        directory_reachable: reachable,
        detail: (!reachable).then(|| "the domain controller does not answer".into()),
        password_policy: None,
        lockout: Some(LockoutPolicy {
            threshold: 10,
            observation_window_seconds: 1800,
        }),
    }
}

fn answers(answers: &[&str]) -> ProofAnswer {
    ProofAnswer {
        code: None,
        answers: answers
            .iter()
            .map(|answer| Some(SecretString::from(*answer)))
            .collect(),
    }
}

fn code(code: &str) -> ProofAnswer {
    ProofAnswer {
        code: Some(code.into()),
        answers: Vec::new(),
    }
}

fn password(text: &str) -> SecretString {
    SecretString::from(text)
}

fn request_id() -> RequestId {
    RequestId::generate().unwrap()
}

#[tokio::test]
async fn every_name_gets_a_flow_and_the_same_next_step_and_questions() {
    let core = Core::start().await;
    core.register_questions(&core.alice()).await;
    let known = core.begin("Alice", Purpose::Reset).await.unwrap();
    let unknown = core.begin("nobody", Purpose::Reset).await.unwrap();
    let known_methods = recovery::methods(&core.state, &known).await.unwrap();
    let unknown_methods = recovery::methods(&core.state, &unknown).await.unwrap();
    assert_eq!(known_methods, unknown_methods);
    assert!(matches!(
        known_methods,
        Methods::Choose {
            step: 1,
            steps: 1,
            ..
        }
    ));

    // An unknown name is asked questions too, the same ones each time it starts again.
    core.choose(&unknown, VerificationMethod::SecurityQuestions)
        .await;
    let asked = core
        .reopen(&unknown)
        .await
        .unwrap()
        .flow
        .challenge
        .unwrap()
        .questions;
    assert_eq!(asked.len(), 3);
    let again = core.begin("nobody", Purpose::Reset).await.unwrap();
    core.choose(&again, VerificationMethod::SecurityQuestions)
        .await;
    let asked_again = core
        .reopen(&again)
        .await
        .unwrap()
        .flow
        .challenge
        .unwrap()
        .questions;
    assert_eq!(asked, asked_again);
    let wrong = core.prove(&unknown, answers(&RIGHT)).await.unwrap();
    assert!(matches!(wrong, ProofStep::Wrong(_)));

    // Alice's own questions, answered right in any case and spacing, prove her.
    core.choose(&known, VerificationMethod::SecurityQuestions)
        .await;
    let proven = core
        .prove(&known, answers(&[" ANSWER 0", "Answer  1 ", "answer 2!"]))
        .await
        .unwrap();
    assert!(matches!(proven, ProofStep::Proven));
    assert_eq!(
        core.audit_results("self_service_identify").await.len(),
        3,
        "every start is audited"
    );
}

#[tokio::test]
async fn a_code_goes_only_to_a_registered_address_and_both_names_read_the_same() {
    let core = Core::start().await;
    core.register(
        &core.alice(),
        VerificationMethod::Email,
        Some("alice@corp.example"),
        Vec::new(),
    )
    .await;
    let known = core.begin("alice", Purpose::Reset).await.unwrap();
    let unknown = core
        .begin("nobody@corp.example", Purpose::Reset)
        .await
        .unwrap();
    core.choose(&unknown, VerificationMethod::Email).await;
    assert!(
        core.outbox.messages().is_empty(),
        "nothing mailed for an unknown name"
    );
    core.choose(&known, VerificationMethod::Email).await;
    let mailed = core.outbox.messages();
    assert_eq!(mailed.len(), 1);
    assert_eq!(mailed[0].to, "alice@corp.example");
    let sent = core.last_code();

    // The code sent to alice means nothing in the unknown name's flow.
    let other = core.prove(&unknown, code(&sent)).await.unwrap();
    assert!(matches!(other, ProofStep::Wrong(_)));
    let wrong = core.prove(&known, code("000000")).await.unwrap();
    assert!(matches!(wrong, ProofStep::Wrong(_)));
    let right = core.prove(&known, code(&sent)).await.unwrap();
    assert!(matches!(right, ProofStep::Proven));
    let mut results = core.audit_results("self_service_send_code").await;
    results.sort();
    assert_eq!(results, ["no_address", "sent"]);
}

#[tokio::test]
async fn a_reset_reaches_the_agent_once_by_anchor_and_ends_the_flow() {
    let core = Core::start().await;
    core.register_questions(&core.alice()).await;
    let flow = core
        .begin("alice@corp.example", Purpose::Reset)
        .await
        .unwrap();

    // Nothing can be sent before the proof.
    let early = recovery::set_new_password(
        &core.state,
        &flow,
        password("Correct-Horse-7"),
        &password("Correct-Horse-7"),
        request_id(),
        &None,
    )
    .await
    .unwrap();
    assert!(matches!(early, FinalOutcome::NotYet(NotYet::Unproven)));

    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    core.prove(&flow, answers(&RIGHT)).await.unwrap();
    let flow = core.reopen(&flow).await.unwrap();
    assert_eq!(
        recovery::methods(&core.state, &flow).await.unwrap(),
        Methods::AllProven
    );
    let unlock = recovery::unlock(&core.state, &flow, request_id(), &None)
        .await
        .unwrap();
    assert!(
        matches!(unlock, FinalOutcome::NotYet(NotYet::OtherStep)),
        "a reset flow cannot unlock"
    );
    let done = recovery::set_new_password(
        &core.state,
        &flow,
        password("Correct-Horse-7"),
        &password("Correct-Horse-7"),
        request_id(),
        &None,
    )
    .await
    .unwrap();
    assert!(matches!(done, FinalOutcome::Done(warnings) if warnings.is_empty()));
    assert_eq!(
        core.received(),
        [(OperationKind::ResetPassword, UserRef::Anchor(anchor(1)))]
    );
    assert!(matches!(core.reopen(&flow).await, Err(Stop::Ended)));
    assert_eq!(core.audit_results("reset_password").await, ["success"]);
}

#[tokio::test]
async fn a_refused_password_is_said_before_anything_is_sent_and_the_directory_verdict_after() {
    let core = Core::start().await;
    core.register_questions(&core.alice()).await;
    let flow = core.begin("alice", Purpose::Reset).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    core.prove(&flow, answers(&RIGHT)).await.unwrap();
    let flow = core.reopen(&flow).await.unwrap();
    let attempt = async |new: &str, confirm: &str| match recovery::set_new_password(
        &core.state,
        &flow,
        password(new),
        &password(confirm),
        request_id(),
        &None,
    )
    .await
    .unwrap()
    {
        FinalOutcome::Refused(refusal) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        attempt("Correct-Horse-7", "Correct-Horse-8").await,
        PasswordRefusal::NotTheSame
    );
    assert_eq!(attempt("", "").await, PasswordRefusal::Empty);
    assert!(matches!(
        attempt("Password1!", "Password1!").await,
        PasswordRefusal::Verdict(ResultCode::PolicyViolation { .. })
    ));
    assert!(core.received().is_empty(), "nothing reached the agent");

    core.answers
        .lock()
        .unwrap()
        .push_back(ResultCode::WrongCurrentPassword.into());
    assert_eq!(
        attempt("Correct-Horse-7", "Correct-Horse-7").await,
        PasswordRefusal::Verdict(ResultCode::WrongCurrentPassword)
    );
    assert!(
        core.reopen(&flow).await.is_ok(),
        "a refused reset keeps its flow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_proofs_get_exactly_the_allowance_then_the_account_is_blocked() {
    let core = Core::start_with(|config| {
        config.limits.proof_failures_per_account = RateLimit::new(5, 3600);
        config.limits.proof_failures_per_address = RateLimit::new(1000, 3600);
        config.limits.proof_failures_global = RateLimit::new(1000, 3600);
    })
    .await;
    core.register_questions(&core.alice()).await;
    let mut flows = Vec::new();
    for _ in 0..20 {
        let flow = core.begin("alice", Purpose::Reset).await.unwrap();
        core.choose(&flow, VerificationMethod::SecurityQuestions)
            .await;
        flows.push(flow);
    }
    let state = Arc::new(core.state.clone());
    let guesses = flows
        .into_iter()
        .map(|flow| {
            let state = state.clone();
            tokio::spawn(async move {
                recovery::check_proof(
                    &state,
                    &flow.key,
                    &answers(&["guess", "guess"]),
                    &None,
                    UnixMillis::now(),
                )
                .await
            })
        })
        .collect::<Vec<_>>();
    let mut wrong = 0;
    let mut blocked = 0;
    for guess in guesses {
        match guess.await.unwrap() {
            Ok(ProofStep::Wrong(_)) => wrong += 1,
            Err(Stop::Blocked) => blocked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let checked = core.audit_results("self_service_verify").await;
    assert_eq!(
        checked.len(),
        5,
        "exactly the allowance was checked: {checked:?}"
    );
    assert_eq!(wrong + blocked, 20);
    assert!(wrong <= 5 && blocked >= 15);
    // Blocked now, even with the right answers and from a new flow.
    assert!(matches!(
        core.begin("alice", Purpose::Reset).await,
        Err(Stop::Blocked)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_right_proof_sent_twice_at_once_counts_once() {
    let core = Core::start().await;
    core.register_questions(&core.alice()).await;
    let flow = core.begin("alice", Purpose::Reset).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    let state = Arc::new(core.state.clone());
    let together = Arc::new(tokio::sync::Barrier::new(2));
    let sends = (0..2)
        .map(|_| {
            let (state, key, together) = (state.clone(), flow.key.clone(), together.clone());
            tokio::spawn(async move {
                together.wait().await;
                recovery::check_proof(&state, &key, &answers(&RIGHT), &None, UnixMillis::now())
                    .await
            })
        })
        .collect::<Vec<_>>();
    let mut steps = Vec::new();
    for send in sends {
        steps.push(send.await.unwrap().unwrap());
    }
    let proven = steps
        .iter()
        .filter(|step| matches!(step, ProofStep::Proven))
        .count();
    let absent = steps
        .iter()
        .filter(|step| matches!(step, ProofStep::NoChallenge))
        .count();
    assert_eq!((proven, absent), (1, 1));
    assert_eq!(core.audit_results("self_service_verify").await, ["success"]);
}

#[tokio::test]
async fn why_a_person_cannot_go_on_is_said_only_after_a_proof_and_ends_the_flow() {
    let core = Core::start().await;
    let dave = core.account(4, "dave");
    core.register_questions(&dave).await;
    let flow = core.begin("dave", Purpose::Reset).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    let proven = core.prove(&flow, answers(&RIGHT)).await;
    assert!(matches!(proven, Err(Stop::AccountDisabled)));
    assert!(matches!(core.reopen(&flow).await, Err(Stop::Ended)));

    // In scope through a group: only members of Staff may reset, and alice is one.
    core.configure(SelfServiceSettings {
        scope: SelfServiceScope::Group {
            group: "staff".into(),
        },
        ..settings()
    })
    .await;
    let alice = core.alice();
    core.register_questions(&alice).await;
    let flow = core.begin("alice", Purpose::Reset).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    let proven = core.prove(&flow, answers(&RIGHT)).await;
    assert!(matches!(proven, Ok(ProofStep::Proven)));

    // Two methods required, one registered: not enough, said after the first proof.
    core.configure(SelfServiceSettings {
        methods_required: 2,
        ..settings()
    })
    .await;
    let flow = core.begin("alice", Purpose::Reset).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    let proven = core.prove(&flow, answers(&RIGHT)).await;
    assert!(matches!(proven, Err(Stop::NotEnoughMethods)));
    assert!(core.received().is_empty());
}

#[tokio::test]
async fn an_out_of_scope_account_is_told_after_its_proof() {
    let core = Core::start().await;
    core.configure(SelfServiceSettings {
        scope: SelfServiceScope::Group {
            group: "Finance".into(),
        },
        ..settings()
    })
    .await;
    core.register_questions(&core.alice()).await;
    let flow = core.begin("alice", Purpose::Unlock).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    let proven = core.prove(&flow, answers(&RIGHT)).await;
    assert!(matches!(proven, Err(Stop::OutOfScope)));
}

#[tokio::test]
async fn a_directory_every_agent_reports_unreachable_stops_before_any_request() {
    let core = Core::start().await;
    core.register_questions(&core.alice()).await;
    let flow = core.begin("alice", Purpose::Unlock).await.unwrap();
    core.choose(&flow, VerificationMethod::SecurityQuestions)
        .await;
    core.prove(&flow, answers(&RIGHT)).await.unwrap();
    let flow = core.reopen(&flow).await.unwrap();
    core.state
        .relay
        .report_status(&core.connection, reachable(false));
    let unlocked = recovery::unlock(&core.state, &flow, request_id(), &None).await;
    assert!(matches!(unlocked, Err(Stop::Unavailable)));
    assert!(core.received().is_empty());
    core.state
        .relay
        .report_status(&core.connection, reachable(true));
    core.answers.lock().unwrap().push_back(Verdict {
        result: ResultCode::Success,
        warnings: vec![OutcomeWarning::WasNotLocked],
        trace: None,
    });
    let unlocked = recovery::unlock(&core.state, &flow, request_id(), &None)
        .await
        .unwrap();
    assert!(
        matches!(&unlocked, FinalOutcome::Done(warnings) if warnings == &[OutcomeWarning::WasNotLocked]),
        "{unlocked:?}"
    );
    assert_eq!(
        core.audit_results("unlock").await,
        ["success"],
        "the unlock is audited as done"
    );
    assert_eq!(
        core.received(),
        [(OperationKind::Unlock, UserRef::Anchor(anchor(1)))]
    );
}

#[tokio::test]
async fn unlock_and_self_service_can_be_off() {
    let core = Core::start().await;
    core.configure(SelfServiceSettings {
        unlock_without_reset: false,
        ..settings()
    })
    .await;
    assert!(matches!(
        core.begin("alice", Purpose::Unlock).await,
        Err(Stop::UnlockNotOffered)
    ));
    core.configure(SelfServiceSettings {
        scope: SelfServiceScope::Nobody,
        ..settings()
    })
    .await;
    assert!(matches!(
        core.begin("alice", Purpose::Reset).await,
        Err(Stop::SelfServiceOff)
    ));
}

#[tokio::test]
async fn every_refused_sign_in_reads_the_same_and_takes_the_floor() {
    let core = Core::start().await;
    let sign_in = async |name: &str| {
        let started = Instant::now();
        let outcome = sessions::sign_in(
            &core.state,
            &Identifier::parse(name).unwrap(),
            password("Whatever-1"),
            &None,
            UnixMillis::now(),
        )
        .await
        .unwrap();
        (outcome, started.elapsed())
    };
    let (unknown, unknown_took) = sign_in("nobody").await;
    let (disabled, disabled_took) = sign_in("dave").await;
    core.answers
        .lock()
        .unwrap()
        .push_back(ResultCode::WrongCurrentPassword.into());
    let (wrong, wrong_took) = sign_in("alice").await;
    for (outcome, took) in [
        (unknown, unknown_took),
        (disabled, disabled_took),
        (wrong, wrong_took),
    ] {
        assert!(matches!(outcome, SignIn::Refused));
        assert!(took >= SIGN_IN_FLOOR, "a refusal came after {took:?}");
    }
    // Only alice's attempt reached the directory: unknown and disabled never bind.
    assert_eq!(
        core.received(),
        [(OperationKind::VerifyPassword, UserRef::Anchor(anchor(1)))]
    );
    let (right, _) = sign_in("alice").await;
    assert!(matches!(
        right,
        SignIn::Opened {
            must_change: false,
            ..
        }
    ));
}

#[tokio::test]
async fn a_registration_code_registers_once_and_wrong_ones_are_counted() {
    let core = Core::start().await;
    core.answers
        .lock()
        .unwrap()
        .push_back(ResultCode::Success.into());
    let SignIn::Opened { token, .. } = sessions::sign_in(
        &core.state,
        &Identifier::parse("alice").unwrap(),
        password("Right-Password-1"),
        &None,
        UnixMillis::now(),
    )
    .await
    .unwrap() else {
        panic!("alice signs in");
    };
    let open = async || {
        SessionHandle::open(
            &core.state,
            secrecy::ExposeSecret::expose_secret(&token),
            UnixMillis::now(),
        )
        .await
        .unwrap()
    };
    let session = open().await;
    assert!(
        sessions::may_change_methods(&core.state, &session, UnixMillis::now())
            .await
            .unwrap()
    );
    registration::send_code_to(
        &core.state,
        &session,
        VerificationMethod::Email,
        "alice@corp.example".into(),
        &None,
        UnixMillis::now(),
    )
    .await
    .unwrap()
    .unwrap();
    let sent = core.last_code();
    let wrong = registration::confirm_code(
        &core.state,
        &open().await,
        "000000",
        &None,
        UnixMillis::now(),
    )
    .await
    .unwrap();
    assert_eq!(wrong, Confirmation::Wrong);
    let right =
        registration::confirm_code(&core.state, &open().await, &sent, &None, UnixMillis::now())
            .await
            .unwrap();
    assert_eq!(right, Confirmation::Registered);
    let again =
        registration::confirm_code(&core.state, &open().await, &sent, &None, UnixMillis::now())
            .await
            .unwrap();
    assert_eq!(again, Confirmation::NothingPending);
    assert_eq!(
        core.audit_results("self_service_register").await,
        ["success"]
    );
    assert_eq!(
        core.audit_results("self_service_verify").await,
        ["invalid_verification"]
    );
    // A fresh registration is itself a proof: methods may change for a while.
    assert!(open().await.session.proven_at.is_some());
    let later = UnixMillis::now().saturating_add(Duration::from_secs(11 * 60));
    assert!(
        !sessions::may_change_methods(&core.state, &open().await, later)
            .await
            .unwrap()
    );
}

mod properties {
    use proptest::prelude::*;

    use super::super::recovery::Identifier;
    use writeback_proto::operation::UserRef;

    proptest! {
        #[test]
        fn a_typed_name_is_normalized_or_refused(name in "\\PC{0,300}") {
            if let Ok(identifier) = Identifier::parse(&name) {
                let normalized = identifier.as_str();
                prop_assert_eq!(normalized, normalized.trim().to_lowercase());
                prop_assert!(!normalized.is_empty());
                prop_assert!(UserRef::logon_name(normalized).is_ok());
            }
        }
    }
}
