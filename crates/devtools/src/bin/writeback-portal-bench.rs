//! `cargo xtask bench portal`: how long the self-service portal takes to answer each of its pages,
//! against the real stack (cloud, agent process, Samba DC), writeback excluded.
//!
//! Every round walks a forgot-password flow to the new-password page, an unknown name through the
//! same first steps, and a signed-in user's pages, over one kept-alive HTTPS connection per
//! person, as a browser would. Each request is timed at the client on loopback, so a figure is
//! the server's time plus TLS and the client: an upper bound on server time. The floor, a static
//! stylesheet served through the same router and headers, is measured in the same rounds.
//!
//! Not counted among the pages, and printed apart: checking security answers (deliberately slow,
//! Argon2 per answer, as for every stored secret) and anything that waits for the directory
//! (sign-in, the new password itself).
//!
//! It ends with one line: `portal pages=… p50_ms=… p99_ms=…`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hyper::{Method, StatusCode};
use writeback_devtools::{argument, percentile_ms};
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_testkit::Stack;
use writeback_testkit::web::WebClient;

const QUESTIONS: [&str; 4] = [
    "What was the name of your first pet?",
    "In which town was your first school?",
    "What was the make of your first car?",
    "What is your favourite book?",
];
const ANSWERS: [&str; 3] = ["Rex the dog", "Springfield", "Volvo"];

/// Where the portal's pages are measured, and the floor and slow steps beside them.
#[derive(Default)]
struct Samples {
    pages: BTreeMap<&'static str, Vec<Duration>>,
    apart: BTreeMap<&'static str, Vec<Duration>>,
}

/// A request to time: what is sent, and the status the answer must have.
struct Visit<'a> {
    method: Method,
    path: &'a str,
    form: Option<&'a [(&'a str, &'a str)]>,
    expected: StatusCode,
}

impl<'a> Visit<'a> {
    fn get(path: &'a str) -> Self {
        Self {
            method: Method::GET,
            path,
            form: None,
            expected: StatusCode::OK,
        }
    }

    /// A form post answered by a redirect to the next page.
    fn post(path: &'a str, form: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            method: Method::POST,
            path,
            form: Some(form),
            expected: StatusCode::SEE_OTHER,
        }
    }
}

/// Times `visit` into `times` under `name`.
async fn timed(
    times: &mut BTreeMap<&'static str, Vec<Duration>>,
    name: &'static str,
    client: &mut WebClient,
    visit: Visit<'_>,
) -> Result<writeback_cli::RawResponse> {
    let started = Instant::now();
    let response = client
        .send(visit.method.clone(), visit.path, visit.form, &[])
        .await;
    let elapsed = started.elapsed();
    ensure!(
        response.status == visit.expected,
        "{} {}: expected {}, got {}: {}",
        visit.method,
        visit.path,
        visit.expected,
        response.status,
        WebClient::body(&response)
            .chars()
            .take(300)
            .collect::<String>()
    );
    times.entry(name).or_default().push(elapsed);
    Ok(response)
}

impl Samples {
    fn clear(&mut self) {
        self.pages.clear();
        self.apart.clear();
    }
}

/// A reset flow for `account` from the identify page to the method page; for a `known` account
/// on through the security questions to the new-password page.
async fn forgot_password(
    samples: &mut Samples,
    client: &mut WebClient,
    account: &str,
    known: bool,
) -> Result<()> {
    let page = timed(
        &mut samples.pages,
        "identify page",
        client,
        Visit::get("/portal/identify?purpose=reset"),
    )
    .await?;
    let csrf = WebClient::csrf(&page);
    let form = [
        ("csrf", csrf.as_str()),
        ("purpose", "reset"),
        ("account", account),
    ];
    let (identify, methods) = if known {
        ("identify (known name)", "method page (known name)")
    } else {
        ("identify (unknown name)", "method page (unknown name)")
    };
    timed(
        &mut samples.pages,
        identify,
        client,
        Visit::post("/portal/identify", &form),
    )
    .await?;
    let page = timed(
        &mut samples.pages,
        methods,
        client,
        Visit::get("/portal/verify"),
    )
    .await?;
    if !known {
        return Ok(());
    }
    let csrf = WebClient::csrf(&page);
    timed(
        &mut samples.pages,
        "choose a method",
        client,
        Visit::post(
            "/portal/verify/start",
            &[("csrf", &csrf), ("method", "security_questions")],
        ),
    )
    .await?;
    let page = timed(
        &mut samples.pages,
        "proof page",
        client,
        Visit::get("/portal/verify/proof"),
    )
    .await?;
    let csrf = WebClient::csrf(&page);
    let body = WebClient::body(&page);
    let mut form = vec![("csrf", csrf.as_str())];
    for (slot, name) in ["answer_0", "answer_1", "answer_2"].iter().enumerate() {
        let asked = body
            .split(&format!("for=\"answer-{slot}\">"))
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_default();
        let index = QUESTIONS
            .iter()
            .position(|question| asked.contains(question))
            .unwrap_or(usize::MAX);
        ensure!(index < ANSWERS.len(), "the proof page asked {asked:?}");
        form.push((name, ANSWERS[index]));
    }
    timed(
        &mut samples.apart,
        "check security answers (Argon2 x3)",
        client,
        Visit::post("/portal/verify/proof", &form),
    )
    .await?;
    let page = timed(
        &mut samples.pages,
        "new-password page",
        client,
        Visit::get("/portal/new-password"),
    )
    .await?;
    ensure!(
        WebClient::body(&page).contains("id=\"checklist\""),
        "the new-password page has no checklist"
    );
    Ok(())
}

/// Signs `name` in through the portal (the agent checks the password) and registers the three
/// security questions.
async fn signed_in_with_questions(stack: &Stack, name: &str, password: &str) -> Result<WebClient> {
    let mut client = WebClient::new(stack);
    let page = client.send(Method::GET, "/portal/sign-in", None, &[]).await;
    let csrf = WebClient::csrf(&page);
    let answer = client
        .send(
            Method::POST,
            "/portal/sign-in",
            Some(&[("csrf", &csrf), ("account", name), ("password", password)]),
            &[],
        )
        .await;
    ensure!(
        answer.status == StatusCode::SEE_OTHER,
        "sign-in refused: {}",
        WebClient::body(&answer)
    );
    let page = client
        .send(Method::GET, "/portal/account/questions", None, &[])
        .await;
    let csrf = WebClient::csrf(&page);
    let mut form = vec![("csrf", csrf.as_str())];
    let slots = [
        ("question_0", "0", "answer_0"),
        ("question_1", "1", "answer_1"),
        ("question_2", "2", "answer_2"),
    ];
    for ((question, index, answer_field), answer) in slots.iter().zip(ANSWERS) {
        form.push((question, index));
        form.push((answer_field, answer));
    }
    let saved = client
        .send(Method::POST, "/portal/account/questions", Some(&form), &[])
        .await;
    ensure!(
        saved.status == StatusCode::SEE_OTHER,
        "questions not saved: {}",
        WebClient::body(&saved)
    );
    Ok(client)
}

async fn signed_in_pages(samples: &mut Samples, client: &mut WebClient) -> Result<()> {
    for (name, path) in [
        ("account page", "/portal/account"),
        ("questions page", "/portal/account/questions"),
        (
            "authenticator page (new key, QR)",
            "/portal/account/authenticator",
        ),
        ("change page", "/portal/change"),
    ] {
        timed(&mut samples.pages, name, client, Visit::get(path)).await?;
    }
    Ok(())
}

fn report(label: &str, samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let p50 = percentile_ms(samples, 0.50);
    let p99 = percentile_ms(samples, 0.99);
    println!(
        "{label:<36} n={:<5} p50={p50:>7.2} ms  p99={p99:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        percentile_ms(samples, 1.0),
    );
    (p50, p99)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds = argument("--rounds", 200)?;
    let warmup = argument("--warmup", 10)?;
    println!("portal bench: {rounds} rounds of every page after {warmup} warm-up rounds");

    let stack = Stack::start().await?;
    stack
        .client
        .update_self_service_settings(&SelfServiceSettings {
            scope: SelfServiceScope::Everyone,
            methods: vec![VerificationMethod::SecurityQuestions],
            methods_required: 1,
            security_questions: QUESTIONS
                .iter()
                .map(|question| (*question).into())
                .collect(),
            questions_asked: 3,
            banned_words: vec!["Contoso".into()],
            minimum_strength: 2,
            ..SelfServiceSettings::default()
        })
        .await?;
    let (name, password) = stack.user_with_password("bench-portal-").await?;
    stack.wait_until_synced(&name, |_| true).await?;
    stack.wait_for_password_policy().await?;
    let mut signed_in = signed_in_with_questions(&stack, &name, &password).await?;

    // One connection per person, kept alive; each round is a new visit (no cookies).
    let mut visitor = WebClient::new(&stack);
    let mut stranger = WebClient::new(&stack);
    let mut samples = Samples::default();
    for round in 0..warmup + rounds {
        if round == warmup {
            samples.clear();
        }
        visitor.cookies.clear();
        stranger.cookies.clear();
        timed(
            &mut samples.pages,
            "home",
            &mut visitor,
            Visit::get("/portal"),
        )
        .await?;
        timed(
            &mut samples.apart,
            "floor: static stylesheet",
            &mut visitor,
            Visit::get("/portal/static/portal.css"),
        )
        .await?;
        timed(
            &mut samples.pages,
            "sign-in page",
            &mut visitor,
            Visit::get("/portal/sign-in"),
        )
        .await?;
        forgot_password(&mut samples, &mut visitor, &name, true).await?;
        forgot_password(
            &mut samples,
            &mut stranger,
            &format!("nobody-{round}-{name}"),
            false,
        )
        .await?;
        signed_in_pages(&mut samples, &mut signed_in).await?;
    }

    let mut all_pages = Vec::new();
    for (label, times) in &mut samples.pages {
        all_pages.extend_from_slice(times);
        report(label, times);
    }
    println!("apart from the pages:");
    let mut floor_p50 = f64::NAN;
    for (label, times) in &mut samples.apart {
        let (p50, _) = report(label, times);
        if label.starts_with("floor") {
            floor_p50 = p50;
        }
    }
    let (p50, p99) = report("every page", &mut all_pages);
    println!("pages p50 / floor p50 = {:.2}", p50 / floor_p50);
    println!(
        "portal pages={} p50_ms={p50:.2} p99_ms={p99:.2}",
        samples.pages.len()
    );
    Ok(())
}
