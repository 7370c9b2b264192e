//! The scenario most end-to-end tests start from: an admin, a member
//! `alice` with an agent `billing-bot`, one started mission, and an
//! enforcement point `gateway` with its own API token.

use mandate_client::{Client, MissionAgent};
use mandate_core::wire::{CreateMissionRequest, RegisterAgentRequest};

use crate::TestServer;

/// The mission to delegate.
#[derive(Debug, Clone)]
pub struct MissionPlan {
    pub goal: String,
    pub scope: String,
    pub boundaries: String,
    pub budget: u64,
}

/// Everyone in the scenario.
#[derive(Debug)]
pub struct Scenario {
    /// The admin's API token.
    pub admin: String,
    /// Alice's API token.
    pub alice: String,
    /// The enforcement point's client (its own principal and token).
    pub gateway: Client,
    /// The enforcement point's API token (to build a fresh client after a
    /// restart: pooled connections to the old process are dead).
    pub gateway_token: String,
    /// The agent, with its mission started.
    pub agent: MissionAgent,
}

impl TestServer {
    /// Sets up [`Scenario`] on this server through its API.
    pub async fn scenario(&self, plan: MissionPlan) -> Scenario {
        let admin = self.init_admin();
        let admin_c = Client::new(self.url()).expect("client").with_token(&admin);
        let alice = admin_c
            .create_principal("alice", None)
            .await
            .expect("alice")
            .token
            .token;
        let alice_c = Client::new(self.url()).expect("client").with_token(&alice);
        alice_c
            .register_agent(&RegisterAgentRequest {
                name: "billing-bot".into(),
                owner: None,
                description: None,
                attestation: None,
            })
            .await
            .expect("agent");
        let created = alice_c
            .create_mission(&CreateMissionRequest {
                agent: "billing-bot".into(),
                goal: plan.goal,
                scope: plan.scope,
                boundaries: plan.boundaries,
                escalations: String::new(),
                ttl_seconds: None,
                budget: Some(plan.budget),
                out_of_scope: None,
            })
            .await
            .expect("mission");
        let agent = MissionAgent::start(self.url(), &created.start_token)
            .await
            .expect("start");
        let gw = admin_c
            .create_principal("gateway", None)
            .await
            .expect("gateway")
            .token
            .token;
        let gateway = Client::new(self.url()).expect("client").with_token(&gw);
        Scenario {
            admin,
            alice,
            gateway,
            gateway_token: gw,
            agent,
        }
    }
}
