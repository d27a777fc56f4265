//! Limits for every caller: a flood of unknown tokens on one connection does not slow an
//! authorized client or the saga engine's lease renewals; streams per connection and watches
//! per token are capped; unknown tokens are answered from a short negative cache; inputs and
//! pages are bounded; a `ci` token cannot hold every engine slot; `demo` sagas only when
//! enabled; the agent reads only its own environment.

mod agent_env;
mod ci_slots;
mod flood;
mod inputs;
mod progress;
mod streams;
