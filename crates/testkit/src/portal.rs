//! The self-service portal over plain HTTP, as the portal and attack tests drive it: a client
//! with a cookie jar (and, behind a trusted proxy, a client address of its own), the steps of
//! each flow, and the self-service policy the tests share.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed step should stop the test"
)]

use hyper::{Method, StatusCode};
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};

use crate::Stack;
use crate::mail::{MailServer, code_in};
use crate::web::WebClient;

pub const QUESTIONS: [&str; 4] = [
    "What was the name of your first pet?",
    "In which town was your first school?",
    "What was the make of your first car?",
    "What is your favourite book?",
];

/// Answers to the first three of [`QUESTIONS`].
pub const ANSWERS: [&str; 3] = ["Rex the dog", "Springfield", "Volvo"];

/// Self-service for everyone, with email, authenticator and questions (three asked), requiring
/// `methods_required` of them.
pub fn settings(methods_required: u8) -> SelfServiceSettings {
    SelfServiceSettings {
        scope: SelfServiceScope::Everyone,
        methods: vec![
            VerificationMethod::Email,
            VerificationMethod::AuthenticatorApp,
            VerificationMethod::SecurityQuestions,
        ],
        methods_required,
        security_questions: QUESTIONS
            .iter()
            .map(|question| (*question).to_owned())
            .collect(),
        questions_asked: 3,
        banned_words: vec!["Contoso".into()],
        minimum_strength: 2,
        helpdesk: "Call the helpdesk on 0100 555 0199.".into(),
        ..SelfServiceSettings::default()
    }
}

/// One browser's worth of portal requests.
#[derive(Debug)]
pub struct PortalClient {
    pub web: WebClient,
    /// Sent as `X-Forwarded-For`, for a cloud that trusts the test's own address as a proxy.
    pub address: Option<String>,
}

impl PortalClient {
    pub fn new(stack: &Stack) -> Self {
        Self {
            web: WebClient::new(stack),
            address: None,
        }
    }

    /// A client of the cloud at `url`, whose certificate has `fingerprint`.
    pub fn for_url(url: &str, fingerprint: writeback_tls::Fingerprint) -> Self {
        Self {
            web: WebClient::for_url(url, fingerprint),
            address: None,
        }
    }

    /// A client whose requests come, through the trusted proxy, from `address`.
    pub fn from_address(stack: &Stack, address: &str) -> Self {
        Self {
            web: WebClient::new(stack),
            address: Some(address.to_owned()),
        }
    }

    /// Another client with the same cookies and address: the same browser, another tab.
    pub fn twin(&self, stack: &Stack) -> Self {
        let mut twin = Self::new(stack);
        twin.address = self.address.clone();
        twin.web.cookies = self.web.cookies.clone();
        twin
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> writeback_cli::RawResponse {
        let forwarded: Vec<(&str, String)> = self
            .address
            .iter()
            .map(|address| ("x-forwarded-for", address.clone()))
            .collect();
        self.web.send(method, path, form, &forwarded).await
    }

    /// The CSRF token of the first form of the page at `path`.
    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.send(Method::GET, path, None).await;
        WebClient::csrf(&page)
    }

    /// Signs in with the directory password; the answer.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> writeback_cli::RawResponse {
        let csrf = self.csrf("/portal/sign-in").await;
        self.send(
            Method::POST,
            "/portal/sign-in",
            Some(&[("csrf", &csrf), ("account", name), ("password", password)]),
        )
        .await
    }

    /// Starts a reset or unlock for `name`.
    pub async fn identify(&mut self, purpose: &str, name: &str) {
        let csrf = self
            .csrf(&format!("/portal/identify?purpose={purpose}"))
            .await;
        let answer = self
            .send(
                Method::POST,
                "/portal/identify",
                Some(&[("csrf", &csrf), ("purpose", purpose), ("account", name)]),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "{}",
            WebClient::body(&answer)
        );
    }

    /// Chooses `method` on the method page; the status of the answer.
    pub async fn start_method(&mut self, method: &str) -> StatusCode {
        let csrf = self.csrf("/portal/verify").await;
        self.send(
            Method::POST,
            "/portal/verify/start",
            Some(&[("csrf", &csrf), ("method", method)]),
        )
        .await
        .status
    }

    /// Proves the flow with the code mailed to `address` (the `index`th code mail to it).
    pub async fn prove_by_email(&mut self, mail: &MailServer, address: &str, index: usize) {
        assert_eq!(self.start_method("email").await, StatusCode::SEE_OTHER);
        let message = mail
            .wait_for(address, "verification code", index)
            .await
            .unwrap();
        let csrf = self.csrf("/portal/verify/proof").await;
        let proved = self
            .send(
                Method::POST,
                "/portal/verify/proof",
                Some(&[("csrf", &csrf), ("code", &code_in(&message.body).unwrap())]),
            )
            .await;
        assert_eq!(proved.status, StatusCode::SEE_OTHER);
    }

    /// Registers `address` for the signed-in person with the code mailed to it (the `index`th
    /// confirmation mail to that address); the last answer, or the refusal to send a code.
    pub async fn register_email(
        &mut self,
        mail: &MailServer,
        address: &str,
        index: usize,
    ) -> writeback_cli::RawResponse {
        let csrf = self.csrf("/portal/account").await;
        let sent = self
            .send(
                Method::POST,
                "/portal/account/email",
                Some(&[("csrf", &csrf), ("email", address)]),
            )
            .await;
        if sent.status != StatusCode::SEE_OTHER {
            return sent;
        }
        let message = mail
            .wait_for(address, "Confirm your email", index)
            .await
            .unwrap();
        self.send(
            Method::POST,
            "/portal/account/code",
            Some(&[("csrf", &csrf), ("code", &code_in(&message.body).unwrap())]),
        )
        .await
    }

    /// Registers the first three [`QUESTIONS`] with [`ANSWERS`] for the signed-in person.
    pub async fn register_questions(&mut self) {
        let csrf = self.csrf("/portal/account/questions").await;
        let mut fields = vec![("csrf", csrf.as_str())];
        for (slot, answer) in ANSWERS.iter().enumerate() {
            fields.push((
                ["question_0", "question_1", "question_2"][slot],
                ["0", "1", "2"][slot],
            ));
            fields.push((["answer_0", "answer_1", "answer_2"][slot], answer));
        }
        let saved = self
            .send(Method::POST, "/portal/account/questions", Some(&fields))
            .await;
        assert_eq!(
            saved.status,
            StatusCode::SEE_OTHER,
            "{}",
            WebClient::body(&saved)
        );
    }
}
