use mandate_core::wire::{AgentView, MissionView, PrincipalView, TokenView};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A Unix time as RFC 3339 (UTC).
pub fn when(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

fn revoked(at: Option<u64>) -> String {
    at.map(|t| format!("  REVOKED {}", when(t)))
        .unwrap_or_default()
}

pub fn principal_line(p: &PrincipalView) -> String {
    format!(
        "{:<24} {:<7} since {}{}",
        p.name,
        p.role,
        when(p.created_at),
        revoked(p.revoked_at)
    )
}

pub fn token_line(t: &TokenView) -> String {
    format!(
        "{}  {:<16} {:<20} {}{}",
        t.id,
        t.principal,
        t.label,
        when(t.created_at),
        revoked(t.revoked_at)
    )
}

pub fn agent_line(a: &AgentView) -> String {
    format!(
        "{:<24} owner {:<16} since {}{}{}",
        a.name,
        a.owner,
        when(a.created_at),
        revoked(a.revoked_at),
        a.attestation
            .as_ref()
            .map(|r| format!("; its missions start only with {}", r.describe()))
            .unwrap_or_default()
    )
}

pub fn mission_line(m: &MissionView) -> String {
    let state = match (m.state, m.end_reason) {
        (mandate_core::MissionState::Ended, Some(r)) => format!("ended ({})", r.as_str()),
        (s, _) => format!("{s:?}").to_lowercase(),
    };
    let goal: String = m.goal.chars().take(48).collect();
    format!(
        "{}  {:<18} {:<12} → {:<16} {}",
        m.id, state, m.principal, m.agent, goal
    )
}

/// A mission and its descendants (parents before children, as the API
/// lists them), drawn depth first: each child under its own parent.
pub fn mission_tree(missions: &[MissionView]) -> String {
    fn walk(all: &[MissionView], at: &MissionView, level: usize, out: &mut String) {
        out.push_str(&format!("{}{}\n", "   ".repeat(level), mission_line(at)));
        for child in all
            .iter()
            .filter(|m| m.parent.as_deref() == Some(at.id.as_str()))
        {
            walk(all, child, level + 1, out);
        }
    }
    let mut out = String::new();
    if let Some(root) = missions.first() {
        walk(missions, root, 0, &mut out);
    }
    out
}

pub fn mission_details(m: &MissionView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
    line("mission", m.id.clone());
    line("goal", m.goal.clone());
    line("principal", m.principal.clone());
    line("agent", m.agent.clone());
    if let Some(p) = &m.parent {
        line("delegated by", format!("mission {p} (depth {})", m.depth));
    }
    let state = match m.end_reason {
        Some(r) => format!(
            "ended ({}) at {}",
            r.as_str(),
            m.ended_at.map(when).unwrap_or_default()
        ),
        None => format!("{:?}", m.state).to_lowercase(),
    };
    line("state", state);
    line("created", when(m.created_at));
    line("expires", when(m.expires_at));
    if let Some(t) = m.started_at {
        line("started", when(t));
    }
    line("budget", format!("{} requests", m.budget));
    line(
        "out of scope",
        format!("{:?}", m.out_of_scope).to_lowercase(),
    );
    line("mission_s256", m.mission_s256.clone());
    if let Some(j) = &m.jkt {
        line("mission key", format!("jkt {j}"));
    }
    for r in &m.attestation_required {
        line("requires", r.describe());
    }
    if let Some(t) = &m.taint {
        line(
            "tainted",
            format!("since {}: {}", when(t.since), t.describe()),
        );
    }
    match &m.attestation {
        Some(a) => line(
            "attested",
            format!(
                "{} {}{}{}",
                a.method.as_str(),
                a.subject,
                a.code_digest
                    .as_deref()
                    .map(|d| format!(", code {d}"))
                    .unwrap_or_default(),
                a.launcher
                    .as_deref()
                    .map(|l| format!(", by launcher {l}"))
                    .unwrap_or_default()
            ),
        ),
        None if m.started_at.is_some() => line("attested", "no".into()),
        None => {}
    }
    for (k, text) in [
        ("scope", &m.policies.scope),
        ("boundaries", &m.policies.boundaries),
        ("escalations", &m.policies.escalations),
    ] {
        if !text.trim().is_empty() {
            out.push_str(&format!("{k}:\n"));
            for l in text.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    out.trim_end().to_owned()
}
