//! Coordinator DigitalOcean clients wired to a simulator, with test-speed retries.

use std::time::Duration;

use berth_coordinator::digitalocean::{
    ClientSettings, HttpDoApi, RateBudget, RetryPolicy, Token, TokenPurpose, Tokens,
};

use super::{DoSim, Scope};

impl DoSim {
    /// Settings for a client of this simulator: retries after 20 ms doubling to 200 ms, five
    /// attempts, a rate budget that never throttles (tests of the limiter set their own), pauses
    /// on the server's word capped at 5 s.
    pub fn client_settings(&self) -> ClientSettings {
        ClientSettings {
            retry: RetryPolicy {
                max_attempts: 5,
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            budget: RateBudget {
                per_minute: 600_000,
                burst: 1000,
                max_pause: Duration::from_secs(5),
                fallback_pause: Duration::from_millis(100),
            },
            request_timeout: Duration::from_secs(10),
            ..ClientSettings::new(self.url().parse().expect("the simulator's url parses"))
        }
    }

    /// A client that uses `secret` for reads and writes; the simulator accepts it.
    pub fn client(&self, secret: &str) -> HttpDoApi {
        self.client_with(secret, self.client_settings())
    }

    pub fn client_with(&self, secret: &str, settings: ClientSettings) -> HttpDoApi {
        self.add_token(secret, Scope::ReadWrite);
        let token = Token::new(TokenPurpose::Provisioning, secret).expect("a valid test token");
        HttpDoApi::new(settings, Tokens::single(token)).expect("a client")
    }
}
