//! Self-service: the portal's rules apart from its pages. Who a person is and what they may use
//! ([`accounts`]), the policy ([`settings`]), the checks of codes, answers and passwords
//! ([`checks`]), flows and sessions in progress ([`state`]), what people are told
//! ([`notices`]), and the flows themselves as steps with typed outcomes: proving a method
//! ([`proof`]), forgot password and unlock ([`recovery`]), sign-in, step-up and change
//! ([`sessions`]), registering methods ([`registration`]). Why a step stops is one [`stop::Stop`].

pub mod accounts;
pub mod checks;
pub mod notices;
pub mod proof;
pub mod recovery;
pub mod registration;
pub mod sessions;
pub mod settings;
pub mod state;
pub mod stop;

#[cfg(test)]
mod tests;
