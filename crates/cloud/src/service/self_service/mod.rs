//! Self-service: the portal's rules apart from its pages. Who a person is and what they may use
//! ([`accounts`]), the policy ([`settings`]), the checks of codes, answers and passwords
//! ([`checks`]), flows and sessions in progress ([`state`]), and what people are told
//! ([`notices`]).

pub mod accounts;
pub mod checks;
pub mod notices;
pub mod settings;
pub mod state;
