//! The portal's pages: one askama template each (under `templates/portal`), filled with text that
//! is already worded, so templates hold no logic beyond loops and conditions.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use writeback_proto::api::SelfServiceSettings;
use writeback_proto::result::PolicyRequirements;

pub use crate::web::pages::{Notice, render};

/// A page that only tells something: a result, or why the person cannot go on, and where to go.
#[derive(Debug, Template)]
#[template(path = "portal/message.html")]
pub struct MessagePage {
    pub title: String,
    pub paragraphs: Vec<String>,
    pub links: Vec<(String, String)>,
    pub helpdesk: Option<Helpdesk>,
}

/// The administrator's helpdesk text, or a link.
#[derive(Debug, Clone)]
pub struct Helpdesk {
    pub text: String,
    pub link: Option<String>,
}

impl Helpdesk {
    pub fn from_setting(setting: &str) -> Option<Self> {
        let setting = setting.trim();
        if setting.is_empty() {
            return None;
        }
        Some(if setting.starts_with("https://") {
            Self {
                text: "Contact your helpdesk".into(),
                link: Some(setting.into()),
            }
        } else {
            Self {
                text: setting.into(),
                link: None,
            }
        })
    }
}

impl MessagePage {
    pub fn new(title: &str, paragraph: &str) -> Self {
        Self {
            title: title.into(),
            paragraphs: vec![paragraph.into()],
            links: Vec::new(),
            helpdesk: None,
        }
    }

    pub fn with_paragraph(mut self, paragraph: &str) -> Self {
        self.paragraphs.push(paragraph.into());
        self
    }

    pub fn with_link(mut self, href: &str, label: &str) -> Self {
        self.links.push((href.into(), label.into()));
        self
    }

    pub fn with_helpdesk(mut self, setting: &str) -> Self {
        self.helpdesk = Helpdesk::from_setting(setting);
        self
    }

    pub fn render(&self, status: StatusCode) -> Response {
        render(status, self)
    }
}

#[derive(Debug, Template)]
#[template(path = "portal/home.html")]
pub struct HomePage {
    pub unlock_offered: bool,
    pub notice: Option<Notice>,
}

#[derive(Debug, Template)]
#[template(path = "portal/identify.html")]
pub struct IdentifyPage {
    pub csrf: String,
    pub purpose: &'static str,
    pub heading: &'static str,
    pub account: String,
    pub notice: Option<Notice>,
}

/// One method to choose on the verification page.
#[derive(Debug, Clone)]
pub struct MethodChoice {
    pub value: &'static str,
    pub label: &'static str,
}

#[derive(Debug, Template)]
#[template(path = "portal/methods.html")]
pub struct MethodsPage {
    pub csrf: String,
    pub step: usize,
    pub steps: usize,
    pub choices: Vec<MethodChoice>,
    pub notice: Option<Notice>,
}

#[derive(Debug, Template)]
#[template(path = "portal/proof.html")]
pub struct ProofPage {
    pub csrf: String,
    pub heading: &'static str,
    pub instruction: String,
    /// The method whose proof is asked, for the "send again" form.
    pub method: &'static str,
    pub can_resend: bool,
    /// Security questions; empty for a code.
    pub questions: Vec<String>,
    pub notice: Option<Notice>,
    /// Where the answer is posted, a new code asked for, and the way back.
    pub action: &'static str,
    pub resend: &'static str,
    pub back: &'static str,
}

/// One line of the new-password checklist. `rule` and `argument` drive the live check.
#[derive(Debug, Clone)]
pub struct ChecklistItem {
    pub rule: &'static str,
    pub argument: String,
    pub text: String,
}

/// Up to `shown` words, then how many more.
fn listed(words: &[String], shown: usize) -> String {
    let mut text = words
        .iter()
        .take(shown)
        .map(|word| word.trim())
        .collect::<Vec<_>>()
        .join(", ");
    if words.len() > shown {
        text.push_str(&format!(" and {} more", words.len() - shown));
    }
    text
}

/// The new-password checklist: the directory's reported requirements, then the cloud's own rules.
/// Word lists travel one per line, so the script checks the same words the server does.
pub fn checklist(
    policy: Option<&PolicyRequirements>,
    user_words: &[String],
    settings: &SelfServiceSettings,
) -> Vec<ChecklistItem> {
    let minimum_strength = settings.minimum_strength;
    let mut items = Vec::new();
    let min_length = policy.map_or(8, |policy| policy.min_length.max(1));
    items.push(ChecklistItem {
        rule: "length",
        argument: min_length.to_string(),
        text: format!("At least {min_length} characters"),
    });
    if policy.is_none_or(|policy| policy.complexity) {
        items.push(ChecklistItem {
            rule: "categories",
            argument: "3".into(),
            text: "Three of these four: upper-case letters, lower-case letters, digits, symbols"
                .into(),
        });
        items.push(ChecklistItem {
            rule: "no-name",
            argument: user_words.join(","),
            text: "Does not contain your user name or parts of your full name".into(),
        });
    }
    // Judged by the server as the password is typed: the lists are too large to send.
    items.push(ChecklistItem {
        rule: "not-common",
        argument: String::new(),
        text: "Is not in lists of breached or common passwords".into(),
    });
    let banned: Vec<String> = settings
        .banned_words
        .iter()
        .map(|word| word.trim().to_lowercase())
        .filter(|word| !word.is_empty())
        .collect();
    if !banned.is_empty() {
        items.push(ChecklistItem {
            rule: "not-banned",
            argument: banned.join("\n"),
            text: format!(
                "Has none of the words your organisation bans ({})",
                listed(&settings.banned_words, 5)
            ),
        });
    }
    if minimum_strength > 0 {
        items.push(ChecklistItem {
            rule: "strength",
            argument: minimum_strength.to_string(),
            text: format!("Is hard enough to guess (strength {minimum_strength} of 4 or more)"),
        });
    }
    if let Some(policy) = policy.filter(|policy| policy.history_length > 0) {
        items.push(ChecklistItem {
            rule: "history",
            argument: String::new(),
            text: format!(
                "Is not one of your last {} passwords (checked when you submit)",
                policy.history_length
            ),
        });
    }
    items
}

#[derive(Debug, Template)]
#[template(path = "portal/new_password.html")]
pub struct NewPasswordPage {
    pub csrf: String,
    pub action: &'static str,
    pub heading: &'static str,
    pub ask_current: bool,
    pub request_id: String,
    pub checklist: Vec<ChecklistItem>,
    pub notice: Option<Notice>,
    pub signed_in: bool,
}

#[derive(Debug, Template)]
#[template(path = "portal/unlock.html")]
pub struct UnlockPage {
    pub csrf: String,
    pub request_id: String,
    pub notice: Option<Notice>,
}

#[derive(Debug, Template)]
#[template(path = "portal/sign_in.html")]
pub struct SignInPage {
    pub csrf: String,
    pub account: String,
    pub notice: Option<Notice>,
}

/// A registered method as the account page lists it.
#[derive(Debug, Clone)]
pub struct RegisteredRow {
    pub method: &'static str,
    pub label: &'static str,
    pub detail: String,
}

#[derive(Debug, Template)]
#[template(path = "portal/account.html")]
pub struct AccountPage {
    pub csrf: String,
    pub name: String,
    pub registered: Vec<RegisteredRow>,
    pub required: usize,
    /// Whether methods may be added, replaced or removed now; otherwise `proof_choices` are the
    /// registered methods that can confirm it is the person first.
    pub may_change: bool,
    pub proof_choices: Vec<MethodChoice>,
    pub offer_email: bool,
    pub offer_authenticator: bool,
    pub offer_questions: bool,
    pub offer_phone: bool,
    pub pending_email: Option<String>,
    pub pending_phone: Option<String>,
    pub reconfirm: bool,
    pub notice: Option<Notice>,
}

#[derive(Debug, Template)]
#[template(path = "portal/authenticator.html")]
pub struct AuthenticatorPage {
    pub csrf: String,
    pub qr_svg_base64: String,
    pub manual_key: String,
    pub notice: Option<Notice>,
}

#[derive(Debug, Template)]
#[template(path = "portal/questions.html")]
pub struct QuestionsPage {
    pub csrf: String,
    pub pool: Vec<String>,
    pub slots: Vec<usize>,
    pub notice: Option<Notice>,
}

/// A refused form, in the portal's own page.
pub fn refused(status: StatusCode, title: &str, message: &str) -> Response {
    MessagePage::new(title, message)
        .with_link("/portal", "Start again")
        .render(status)
}
