//! Talking to a Mandate authority.
//!
//! - [`Client`]: the typed API client a principal (person, operator, CLI)
//!   uses, authenticated by an API token.
//! - [`MissionAgent`]: the agent's side of a mission. It creates a fresh
//!   mission key, starts the mission with a start token and a proof of
//!   possession, keeps the credential fresh, and ends the mission.

mod agent;
mod client;
mod memory;

pub use agent::{Attempt, MissionAgent, SavedMission};
pub use client::{Client, ClientError, fetch_jwks};
