//! The store's behaviour through the `Store` trait, on a real SQLite file.
//! Written against `dyn Store` so the PostgreSQL store can run the same suite.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;

use mandate_core::{
    MissionBody, MissionId, MissionKey, MissionLimits, MissionPolicies, MissionSpec, MissionState,
    OsRandom, OutOfScope, Role, SecretToken, TokenKind, UnixTime, mission_s256,
};
use mandate_store::{
    Agent, ApiToken, NewMission, Principal, Revocation, RevocationKind, SqliteStore, StartError,
    Store, StoreError,
};

const T0: UnixTime = UnixTime(1_700_000_000);

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("mandate.db"))
        .await
        .unwrap();
    (dir, Arc::new(s))
}

fn principal(name: &str, role: Role) -> Principal {
    Principal {
        name: name.parse().unwrap(),
        role,
        created_at: T0,
        revoked_at: None,
    }
}

async fn seed(s: &dyn Store) {
    s.create_principal(&principal("alice", Role::Member))
        .await
        .unwrap();
    s.create_principal(&principal("bob", Role::Member))
        .await
        .unwrap();
    for (agent, owner) in [("bot-a", "alice"), ("bot-b", "bob")] {
        s.create_agent(&Agent {
            name: agent.parse().unwrap(),
            owner: owner.parse().unwrap(),
            description: String::new(),
            created_at: T0,
            revoked_at: None,
        })
        .await
        .unwrap();
    }
}

async fn new_mission(s: &dyn Store, principal: &str, agent: &str) -> (MissionId, SecretToken) {
    let id = MissionId::generate(&OsRandom).unwrap();
    let body = MissionBody::new(
        MissionSpec {
            agent: agent.parse().unwrap(),
            goal: "reconcile invoices".into(),
            policies: MissionPolicies::default(),
            ttl_secs: 3_600,
            budget: 10,
            out_of_scope: OutOfScope::Escalate,
        },
        id.clone(),
        "http://issuer.test",
        principal.parse().unwrap(),
        T0,
        MissionLimits::default(),
        None,
    )
    .unwrap();
    let token = SecretToken::generate(TokenKind::Start, &OsRandom).unwrap();
    let s256 = mission_s256(&body).unwrap();
    s.create_mission(&NewMission {
        body,
        s256,
        start_token: token.hash(),
        start_token_expires_at: T0.plus(600),
    })
    .await
    .unwrap();
    (id, token)
}

#[tokio::test]
async fn bootstrap_happens_once() {
    let (_d, s) = store().await;
    let tok = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    let record = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        principal: "admin".parse().unwrap(),
        label: "bootstrap".into(),
        created_at: T0,
        revoked_at: None,
    };
    assert!(
        s.bootstrap_admin(&principal("admin", Role::Admin), &record, &tok.hash())
            .await
            .unwrap()
    );
    let (p, _) = s.principal_by_token(&tok.hash()).await.unwrap().unwrap();
    assert_eq!(p.role, Role::Admin);
    let again = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        ..record
    };
    let tok2 = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    assert!(
        !s.bootstrap_admin(&principal("root", Role::Admin), &again, &tok2.hash())
            .await
            .unwrap()
    );
    assert!(s.principal_by_token(&tok2.hash()).await.unwrap().is_none());
    assert!(matches!(
        s.create_principal(&principal("admin", Role::Member))
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
}

#[tokio::test]
async fn a_start_token_starts_exactly_one_mission_under_a_race() {
    let (_d, s) = store().await;
    seed(s.as_ref()).await;
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        let hash = token.hash();
        tasks.push(tokio::spawn(async move {
            let key = MissionKey::generate(&OsRandom).unwrap();
            s.start_mission(&hash, key.thumbprint(), T0.plus(5))
                .await
                .map(|_| key.thumbprint().clone())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(jkt) => winners.push(jkt),
            Err(StartError::Used) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let m = s.mission(&id).await.unwrap().unwrap();
    assert_eq!(m.state_at(T0.plus(6)).0, MissionState::Active);
    assert_eq!(m.jkt(), Some(&winners[0]));
}

#[tokio::test]
async fn start_tokens_expire_and_unknown_ones_are_refused() {
    let (_d, s) = store().await;
    seed(s.as_ref()).await;
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let key = MissionKey::generate(&OsRandom).unwrap();
    assert!(matches!(
        s.start_mission(&token.hash(), key.thumbprint(), T0.plus(600))
            .await,
        Err(StartError::Expired)
    ));
    let stranger = SecretToken::generate(TokenKind::Start, &OsRandom).unwrap();
    assert!(matches!(
        s.start_mission(&stranger.hash(), key.thumbprint(), T0)
            .await,
        Err(StartError::Unknown)
    ));
    // Nothing changed.
    assert_eq!(
        s.mission(&id).await.unwrap().unwrap().state_at(T0).0,
        MissionState::Ready
    );
}

#[tokio::test]
async fn revoking_a_principal_cascades_to_tokens_agents_and_missions() {
    let (_d, s) = store().await;
    seed(s.as_ref()).await;
    let (alice_m, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    // bob delegates to alice's agent: ends too when alice goes, as her agent does.
    let (bob_on_alice_agent, _) = new_mission(s.as_ref(), "bob", "bot-a").await;
    let (bob_m, _) = new_mission(s.as_ref(), "bob", "bot-b").await;
    let tok = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    let rec = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        principal: "alice".parse().unwrap(),
        label: "laptop".into(),
        created_at: T0,
        revoked_at: None,
    };
    s.create_api_token(&rec, &tok.hash()).await.unwrap();

    let summary = s
        .revoke(&Revocation {
            kind: RevocationKind::Principal,
            target: "alice".into(),
            reason: "left the company".into(),
            revoked_by: "bob".parse().unwrap(),
            at: T0.plus(10),
        })
        .await
        .unwrap();
    let mut expected = vec![alice_m.clone(), bob_on_alice_agent.clone()];
    expected.sort();
    assert_eq!(summary.missions, expected);
    assert_eq!(summary.agents.len(), 1);
    assert_eq!(summary.tokens, 1);
    assert!(s.principal_by_token(&tok.hash()).await.unwrap().is_none());
    for id in [&alice_m, &bob_on_alice_agent] {
        assert_eq!(
            s.mission(id)
                .await
                .unwrap()
                .unwrap()
                .state_at(T0.plus(11))
                .0,
            MissionState::Ended
        );
    }
    assert_eq!(
        s.mission(&bob_m)
            .await
            .unwrap()
            .unwrap()
            .state_at(T0.plus(11))
            .0,
        MissionState::Ready
    );
    assert_eq!(s.revocations(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_mission_body_edited_in_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let s = SqliteStore::open(&path).await.unwrap();
    seed(&s).await;
    let (id, _) = new_mission(&s, "alice", "bot-a").await;
    drop(s);
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE missions SET body = replace(body, 'reconcile invoices', 'wire all the money')",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;
    let s = SqliteStore::open(&path).await.unwrap();
    assert!(matches!(
        s.mission(&id).await.unwrap_err(),
        StoreError::Corrupt(_)
    ));
}

#[tokio::test]
async fn allowances_count_budget_and_grant_uses_together() {
    use mandate_store::Allowance;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let s = SqliteStore::open(&path).await.unwrap();
    seed(&s).await;
    let (id, token) = new_mission(&s, "alice", "bot-a").await;
    let key = MissionKey::generate(&OsRandom).unwrap();
    s.start_mission(&token.hash(), key.thumbprint(), T0.plus(1))
        .await
        .unwrap();
    // Grants are created by approvals; here, directly.
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO grants (id, mission_id, policy, created_at, max_uses) \
         VALUES ('once', ?1, 'permit(principal, action, resource);', 0, 1)",
    )
    .bind(id.as_str())
    .execute(&raw)
    .await
    .unwrap();
    assert_eq!(s.live_grants(&id, T0.plus(2)).await.unwrap().len(), 1);

    let now = T0.plus(2);
    // Counted as the audit writer counts: inside its group's transaction.
    let mut sink = s.audit_sink().unwrap();
    let mut count = |budget: u64, grant: Option<&str>, at: UnixTime| {
        sink.begin().unwrap();
        let a = sink.count(&id, budget, grant, at).unwrap();
        sink.commit().unwrap();
        a
    };
    assert_eq!(count(3, Some("once"), now), Allowance::Counted(1));
    // The single-use grant is spent: it is no longer live, and a second use
    // fails without spending budget.
    assert!(s.live_grants(&id, now).await.unwrap().is_empty());
    assert_eq!(count(3, Some("once"), now), Allowance::GrantUnavailable);
    assert_eq!(s.budget_used(&id).await.unwrap(), 1);
    assert_eq!(count(3, None, now), Allowance::Counted(2));
    assert_eq!(count(3, None, now), Allowance::Counted(3));
    assert_eq!(count(3, None, now), Allowance::BudgetExhausted);
    assert_eq!(s.budget_used(&id).await.unwrap(), 3);
    // A grant's use is undone with a budget unit that could not be counted.
    sqlx::query(
        "INSERT INTO grants (id, mission_id, policy, created_at, max_uses) \
         VALUES ('twice', ?1, 'permit(principal, action, resource);', 0, 2)",
    )
    .bind(id.as_str())
    .execute(&raw)
    .await
    .unwrap();
    assert_eq!(count(3, Some("twice"), now), Allowance::BudgetExhausted);
    assert_eq!(s.live_grants(&id, now).await.unwrap().len(), 1);
    let uses: i64 = sqlx::query_scalar("SELECT uses FROM grants WHERE id = 'twice'")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(uses, 0);
    // A count in a group that is rolled back is not kept.
    let mut sink = s.audit_sink().unwrap();
    sink.begin().unwrap();
    assert_eq!(
        sink.count(&id, 10, None, now).unwrap(),
        Allowance::Counted(4)
    );
    sink.rollback();
    assert_eq!(s.budget_used(&id).await.unwrap(), 3);
    // Past its expiry, or once ended, the mission's calls are not counted.
    sink.begin().unwrap();
    assert_eq!(
        sink.count(&id, 10, None, T0.plus(1_000_000)).unwrap(),
        Allowance::MissionEnded
    );
    sink.commit().unwrap();
    s.end_mission(&id, mandate_core::EndReason::Completed, "alice", now)
        .await
        .unwrap();
    sink.begin().unwrap();
    assert_eq!(
        sink.count(&id, 10, None, now).unwrap(),
        Allowance::MissionEnded
    );
    sink.commit().unwrap();
    assert_eq!(s.budget_used(&id).await.unwrap(), 3);
}

#[tokio::test]
async fn identical_escalations_join_and_the_queue_is_bounded() {
    use mandate_store::NewApproval;
    let (_d, s) = store().await;
    seed(s.as_ref()).await;
    let (id, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let approval = |n: u32| NewApproval {
        id: format!("apr_{n}"),
        mission: id.clone(),
        request_digest: format!("digest-{n}"),
        action: "refund".into(),
        resource: "{}".into(),
        context: "{\"amount\":75000}".into(),
        context_digest: "c".into(),
        reason_code: "escalation".into(),
        policies: "[]".into(),
        justification: String::new(),
        summary: "refund".into(),
        approvers: Vec::new(),
        step_up: false,
        created_at: T0,
        expires_at: T0.plus(600),
    };
    assert_eq!(
        s.open_approval(&approval(1), 2).await.unwrap(),
        Some(("apr_1".into(), false))
    );
    let again = NewApproval {
        id: "apr_other".into(),
        ..approval(1)
    };
    assert_eq!(
        s.open_approval(&again, 2).await.unwrap(),
        Some(("apr_1".into(), true))
    );
    assert_eq!(
        s.open_approval(&approval(2), 2).await.unwrap(),
        Some(("apr_2".into(), false))
    );
    assert_eq!(
        s.open_approval(&approval(3), 2).await.unwrap(),
        None,
        "the queue is full"
    );
}

#[tokio::test]
async fn an_approval_is_decided_once_and_its_grant_dies_with_the_mission() {
    use mandate_core::GrantScope;
    use mandate_store::{ApprovalError, ApprovalStatus, NewApproval, NewGrant, Resolution};
    let (_d, s) = store().await;
    seed(s.as_ref()).await;
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let key = MissionKey::generate(&OsRandom).unwrap();
    s.start_mission(&token.hash(), key.thumbprint(), T0.plus(1))
        .await
        .unwrap();
    let open = |n: &str, expires: u64| NewApproval {
        id: n.into(),
        mission: id.clone(),
        request_digest: format!("d-{n}"),
        action: "refund".into(),
        resource: "{}".into(),
        context: "{}".into(),
        context_digest: "c".into(),
        reason_code: "escalation".into(),
        policies: "[]".into(),
        justification: "because".into(),
        summary: "refund".into(),
        approvers: vec!["carol".into()],
        step_up: false,
        created_at: T0,
        expires_at: T0.plus(expires),
    };
    s.open_approval(&open("apr_a", 600), 10).await.unwrap();
    s.open_approval(&open("apr_b", 5), 10).await.unwrap();
    let now = T0.plus(2);
    let grant = |g: &str| {
        Resolution::Approve(NewGrant {
            id: g.into(),
            scope: GrantScope::Once,
            policy: String::new(),
            request_digest: Some("d-apr_a".into()),
            max_uses: Some(1),
            expires_at: None,
        })
    };
    // Eight approvers at once: exactly one decision, one grant.
    let mut racers = Vec::new();
    for n in 0..8 {
        let s = Arc::clone(&s);
        let r = grant(&format!("grt_{n}"));
        racers.push(tokio::spawn(async move {
            s.resolve_approval("apr_a", "carol", "ok", &r, now).await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(a) => {
                won += 1;
                assert_eq!(a.status, ApprovalStatus::Approved);
                assert_eq!(a.decided_by.as_deref(), Some("carol"));
            }
            Err(ApprovalError::AlreadyDecided(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    let live = s.live_grants(&id, now).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].request_digest.as_deref(), Some("d-apr_a"));
    // An expired request cannot be decided, and the sweep marks it.
    assert!(matches!(
        s.resolve_approval("apr_b", "carol", "", &grant("grt_x"), T0.plus(6))
            .await,
        Err(ApprovalError::Expired)
    ));
    let swept = s.expire_approvals(T0.plus(6)).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].id, "apr_b");
    // Ending the mission kills its grants.
    s.end_mission(&id, mandate_core::EndReason::Completed, "alice", now)
        .await
        .unwrap();
    assert!(s.live_grants(&id, now).await.unwrap().is_empty());
}

/// The audit log in a real SQLite file: edits, deletions, reordering and
/// truncation made directly in the file are found, and named by sequence.
#[tokio::test]
async fn audit_tampering_in_the_database_file_is_found() {
    use mandate_core::{AuthorityKey, Cadence, ChainHead, sign_checkpoint, verify_chain};
    const ISS: &str = "https://mandate.example";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let key = AuthorityKey::generate(&OsRandom).unwrap();
    {
        let s = SqliteStore::open(&path).await.unwrap();
        let mut head = s.audit_head().await.unwrap();
        assert_eq!(head, ChainHead::genesis());
        let mut previous = head.clone();
        // Two batches (group commits) of ten, a checkpoint after each.
        for batch in 0..2u64 {
            let records: Vec<_> = (0..10u64)
                .map(|i| {
                    let body = serde_json::json!({ "mission": "msn_x", "decision": "allow", "n": batch * 10 + i });
                    head.append(1_000 + batch * 10 + i, "decision", body).unwrap()
                })
                .collect();
            let mut sink = s.audit_sink().unwrap();
            assert_eq!(sink.begin().unwrap(), previous);
            for r in &records {
                sink.append(r).unwrap();
            }
            sink.commit().unwrap();
            previous = head.clone();
            s.add_checkpoint(
                head.seq,
                &sign_checkpoint(&key, ISS, &head, 2_000, Cadence::default()).unwrap(),
            )
            .await
            .unwrap();
        }
        assert_eq!(s.audit_head().await.unwrap(), head);
        // A record that does not follow the head is refused, and nothing
        // of its group is kept.
        let mut stale = ChainHead::genesis();
        let r = stale.append(1, "decision", serde_json::json!({})).unwrap();
        let mut sink = s.audit_sink().unwrap();
        sink.begin().unwrap();
        assert!(matches!(
            sink.append(&r).unwrap_err(),
            StoreError::Conflict(_)
        ));
        sink.rollback();
    }
    let verify = || async {
        let s = SqliteStore::open(&path).await.unwrap();
        let records = s.audit_records(0, 1_000).await.unwrap();
        let cps = s.checkpoints().await.unwrap();
        verify_chain(ChainHead::genesis(), records, &cps, &key.jwks(), Some(ISS))
    };
    assert_eq!(verify().await.unwrap().last, 20);
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let exec = |sql: &'static str| {
        let raw = raw.clone();
        async move { sqlx::query(sql).execute(&raw).await.unwrap() }
    };

    // Edit a body.
    exec("UPDATE audit_events SET body = replace(body, '\"allow\"', '\"deny\"') WHERE seq = 7")
        .await;
    assert_eq!(verify().await.unwrap_err().seq, 7);
    exec("UPDATE audit_events SET body = replace(body, '\"deny\"', '\"allow\"') WHERE seq = 7")
        .await;
    assert!(verify().await.is_ok());

    // Reorder two records (swap their sequence numbers).
    exec("UPDATE audit_events SET seq = -1 WHERE seq = 12").await;
    exec("UPDATE audit_events SET seq = 12 WHERE seq = 13").await;
    exec("UPDATE audit_events SET seq = 13 WHERE seq = -1").await;
    assert_eq!(verify().await.unwrap_err().seq, 12);
    exec("UPDATE audit_events SET seq = -1 WHERE seq = 12").await;
    exec("UPDATE audit_events SET seq = 12 WHERE seq = 13").await;
    exec("UPDATE audit_events SET seq = 13 WHERE seq = -1").await;
    assert!(verify().await.is_ok());

    // Delete one.
    exec("DELETE FROM audit_events WHERE seq = 15").await;
    assert_eq!(verify().await.unwrap_err().seq, 15);

    // Truncate the tail.
    exec("DELETE FROM audit_events WHERE seq >= 15").await;
    let err = verify().await.unwrap_err();
    assert_eq!(err.seq, 15);
    assert!(err.reason.contains("truncated"), "{err}");
}
