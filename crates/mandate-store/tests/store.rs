//! The store's behaviour through the `Store` trait, on both backends: each
//! test runs once on a real SQLite file and once on PostgreSQL (in a fresh
//! schema of its own, dropped at the end). PostgreSQL is found at
//! `MANDATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); if it cannot be reached the
//! PostgreSQL tests fail, they are never skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mandate_core::{
    AgentName, ChildSpec, EndReason, MissionBody, MissionId, MissionKey, MissionLimits,
    MissionPolicies, MissionRef, MissionSpec, MissionState, MissionStatus, OsRandom, OutOfScope,
    Role, SecretToken, TokenKind, UnixTime, mission_s256,
};
use mandate_store::{
    Agent, ApiToken, AuditPage, DelegateError, NewDelegation, NewMission, PostgresStore, Principal,
    Revocation, RevocationKind, SqliteStore, StartError, Store, StoreError,
};

const T0: UnixTime = UnixTime(1_700_000_000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

fn pg_url() -> String {
    std::env::var("MANDATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database of one backend: a SQLite file in a temp dir, or a
/// PostgreSQL schema of its own (dropped when this is dropped).
struct Db {
    backend: Backend,
    dir: tempfile::TempDir,
    schema: String,
    store: Option<Arc<dyn Store>>,
}

impl Db {
    async fn new(backend: Backend) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "t_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut db = Self {
            backend,
            dir: tempfile::tempdir().unwrap(),
            schema,
            store: None,
        };
        db.store = Some(db.open().await);
        db
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mandate.db")
    }

    /// The test's store.
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(self.store.as_ref().unwrap())
    }

    /// Another store on the same database: on PostgreSQL, another node.
    async fn open(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => Arc::new(SqliteStore::open(&self.path()).await.unwrap()),
            Backend::Postgres => Arc::new(self.open_pg().await),
        }
    }

    async fn open_pg(&self) -> PostgresStore {
        let url = pg_url();
        PostgresStore::connect_in_schema(&url, &self.schema)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {url} cannot be reached ({e}): start it, or point \
                     MANDATE_TEST_DATABASE_URL at one; these tests do not skip"
                )
            })
    }

    /// Drops the test's store and opens the database again.
    async fn reopen(&mut self) {
        self.store = None;
        self.store = Some(self.open().await);
    }

    /// Runs raw SQL on the database behind the store's back (`$1`… bind
    /// `args`, as text).
    async fn exec(&self, sql: &str, args: &[&str]) -> u64 {
        match self.backend {
            Backend::Sqlite => {
                let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.path().display()))
                    .await
                    .unwrap();
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for a in args {
                    q = q.bind(*a);
                }
                let n = q.execute(&raw).await.unwrap().rows_affected();
                raw.close().await;
                n
            }
            Backend::Postgres => {
                let mut raw = self.raw_pg().await;
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for a in args {
                    q = q.bind(*a);
                }
                q.execute(&mut raw).await.unwrap().rows_affected()
            }
        }
    }

    /// One integer from raw SQL.
    async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.path().display()))
                    .await
                    .unwrap();
                let v = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&raw)
                    .await
                    .unwrap();
                raw.close().await;
                v
            }
            Backend::Postgres => {
                let mut raw = self.raw_pg().await;
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut raw)
                    .await
                    .unwrap()
            }
        }
    }

    async fn raw_pg(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        let options: sqlx::postgres::PgConnectOptions = pg_url().parse().unwrap();
        sqlx::PgConnection::connect_with(&options.options([("search_path", self.schema.as_str())]))
            .await
            .unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.store = None;
        if self.backend != Backend::Postgres {
            return;
        }
        let schema = self.schema.clone();
        // Dropped on a thread of its own: this may run inside a runtime.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let options: sqlx::postgres::PgConnectOptions = pg_url().parse().unwrap();
                if let Ok(mut c) = sqlx::PgConnection::connect_with(&options).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

/// Each named test, once per backend: `name::sqlite` and `name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Db::new(super::Backend::Sqlite).await).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Db::new(super::Backend::Postgres).await).await;
            }
        }
    )*};
}

both!(
    bootstrap_happens_once,
    a_start_token_starts_exactly_one_mission_under_a_race,
    start_tokens_expire_and_unknown_ones_are_refused,
    revoking_a_principal_cascades_to_tokens_agents_and_missions,
    a_mission_body_edited_in_the_database_is_refused,
    allowances_count_budget_and_grant_uses_together,
    a_group_counts_its_calls_as_one_by_one,
    a_mission_is_read_with_its_count_and_live_grants,
    an_api_token_and_a_mission_are_read_together,
    identical_escalations_join_and_the_queue_is_bounded,
    an_approval_is_decided_once_and_its_grant_dies_with_the_mission,
    audit_tampering_in_the_database_is_found,
    a_replayed_key_is_claimed_once,
    a_proof_is_claimed_once_outside_the_audit_groups,
    a_claim_outlives_a_sweep_by_a_node_whose_clock_runs_ahead,
    vault_secrets_change_only_from_the_version_they_replace,
    approvals_are_listed_to_who_may_see_and_decide_them,
    webhooks_wait_in_order_until_delivered_or_given_up,
    audit_records_are_found_by_a_body_field,
    a_revoked_api_token_no_longer_authenticates,
    audit_filters_answer_what_a_scan_of_the_log_answers,
    a_filter_column_changed_behind_the_log_is_found,
    audit_find_within_a_mission_finds_what_the_whole_log_finds,
    migration_0008_fills_the_columns_of_a_log_written_before_it,
    a_delegated_child_is_stored_under_its_running_parent,
    a_refused_delegation_changes_nothing,
    racing_delegations_take_no_more_than_the_parent_has,
    ending_a_mission_ends_every_mission_below_it,
    revoking_a_mission_or_agent_ends_the_missions_below_theirs,
    an_ephemeral_sub_agent_exists_for_its_one_mission,
    a_denial_that_ends_a_mission_ends_the_missions_below_it,
    live_missions_are_counted_per_agent,
);

mod a_group_commits_on_the_writers_thread_or_from_a_task {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_group_commits_on_the_writers_thread_or_from_a_task(
            super::Db::new(super::Backend::Sqlite).await,
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_group_commits_on_the_writers_thread_or_from_a_task(
            super::Db::new(super::Backend::Postgres).await,
        )
        .await;
    }
}

/// The audit writer commits inside `block_in_place`, in a
/// `blocking_section`, on one of the runtime's worker threads (PostgreSQL's
/// sink then drives its connection on that thread, where tokio allows it);
/// a sink is also called from async tasks (opening the log), where it must
/// not block the worker (PostgreSQL's runs the call on a thread of its
/// own: driving it in place would panic). Groups committed both ways, one
/// after the other on one sink, are one chain in the log. That no thread
/// is handed a commit is measured, not tested (docs/benchmarks.md, "The
/// audit connection on the committing thread").
async fn a_group_commits_on_the_writers_thread_or_from_a_task(db: Db) {
    let s = db.store();
    let log = Arc::clone(&s);
    // On a worker thread, as a request's commit is.
    let third = tokio::spawn(async move {
        let mut sink = s.audit_sink().unwrap();
        let mut head = sink.head().unwrap();
        assert_eq!(head, mandate_core::ChainHead::genesis());
        let mut group = |sink: &mut Box<dyn mandate_store::AuditSink>, n: u64| {
            assert_eq!(sink.begin().unwrap(), head);
            for i in 0..n {
                let r = head
                    .append(1_000 + i, "decision", serde_json::json!({ "n": i }))
                    .unwrap();
                sink.append(&r).unwrap();
            }
            sink.commit().unwrap();
            head.clone()
        };
        let first =
            tokio::task::block_in_place(|| mandate_store::blocking_section(|| group(&mut sink, 3)));
        let second = group(&mut sink, 2);
        let third =
            tokio::task::block_in_place(|| mandate_store::blocking_section(|| group(&mut sink, 1)));
        assert_eq!((first.seq, second.seq, third.seq), (3, 5, 6));
        // Dropped on the worker: it closes its connection on a thread of
        // its own, without a panic.
        drop(sink);
        third
    })
    .await
    .unwrap();
    assert_eq!(log.audit_head().await.unwrap(), third);
    assert_eq!(log.audit_records(0, 100).await.unwrap().len(), 6);
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
            attestation: None,
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

async fn bootstrap_happens_once(db: Db) {
    let s = db.store();
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

async fn a_start_token_starts_exactly_one_mission_under_a_race(db: Db) {
    let s = db.store();
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

async fn start_tokens_expire_and_unknown_ones_are_refused(db: Db) {
    let s = db.store();
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

async fn revoking_a_principal_cascades_to_tokens_agents_and_missions(db: Db) {
    let s = db.store();
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

async fn a_mission_body_edited_in_the_database_is_refused(mut db: Db) {
    let s = db.store();
    seed(s.as_ref()).await;
    let (id, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    drop(s);
    db.reopen().await;
    db.exec(
        "UPDATE missions SET body = replace(body, 'reconcile invoices', 'wire all the money')",
        &[],
    )
    .await;
    assert!(matches!(
        db.store().mission(&id).await.unwrap_err(),
        StoreError::Corrupt(_)
    ));
}

async fn allowances_count_budget_and_grant_uses_together(db: Db) {
    use mandate_store::Allowance;
    let s = db.store();
    seed(s.as_ref()).await;
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    start(s.as_ref(), &token).await;
    // Grants are created by approvals; here, directly.
    db.exec(
        "INSERT INTO grants (id, mission_id, policy, created_at, max_uses) \
         VALUES ('once', $1, 'permit(principal, action, resource);', 0, 1)",
        &[id.as_str()],
    )
    .await;
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
    db.exec(
        "INSERT INTO grants (id, mission_id, policy, created_at, max_uses) \
         VALUES ('twice', $1, 'permit(principal, action, resource);', 0, 2)",
        &[id.as_str()],
    )
    .await;
    assert_eq!(count(3, Some("twice"), now), Allowance::BudgetExhausted);
    assert_eq!(s.live_grants(&id, now).await.unwrap().len(), 1);
    assert_eq!(
        db.scalar("SELECT uses FROM grants WHERE id = 'twice'")
            .await,
        0
    );
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

async fn a_group_counts_its_calls_as_one_by_one(db: Db) {
    use mandate_store::{Allowance, CountAsk};
    let s = db.store();
    seed(s.as_ref()).await;
    let now = T0.plus(2);
    let mut started = Vec::new();
    for _ in 0..3 {
        let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
        start(s.as_ref(), &token).await;
        started.push(id);
    }
    let [a, b, ended] = <[MissionId; 3]>::try_from(started).unwrap();
    s.end_mission(&ended, mandate_core::EndReason::Completed, "alice", now)
        .await
        .unwrap();
    let ask = |id: &MissionId, budget: u64, grant: Option<&str>| CountAsk {
        mission: id.clone(),
        budget,
        grant: grant.map(str::to_owned),
        now,
    };
    // Mission `a` may spend 3, `b` 2; calls of both, interleaved, and of
    // an ended mission: each gets what counting it alone, in turn, gives.
    let asks = [
        ask(&a, 3, None),
        ask(&b, 2, None),
        ask(&a, 3, None),
        ask(&ended, 3, None),
        ask(&a, 3, None),
        ask(&b, 2, None),
        ask(&a, 3, None),
        ask(&b, 2, None),
    ];
    let mut sink = s.audit_sink().unwrap();
    sink.begin().unwrap();
    assert_eq!(
        sink.count_all(&asks).unwrap(),
        [
            Allowance::Counted(1),
            Allowance::Counted(1),
            Allowance::Counted(2),
            Allowance::MissionEnded,
            Allowance::Counted(3),
            Allowance::Counted(2),
            Allowance::BudgetExhausted,
            Allowance::BudgetExhausted,
        ]
    );
    // Rolled back, nothing of it is kept.
    sink.rollback();
    assert_eq!(s.budget_used(&a).await.unwrap(), 0);
    assert_eq!(s.budget_used(&b).await.unwrap(), 0);
    // A group opened with its counts (one exchange on PostgreSQL): the
    // log's head, and the same answers.
    let (head, counted) = sink.begin_counting(&asks).unwrap();
    assert_eq!(head, s.audit_head().await.unwrap());
    assert_eq!(
        counted[..5],
        [
            Allowance::Counted(1),
            Allowance::Counted(1),
            Allowance::Counted(2),
            Allowance::MissionEnded,
            Allowance::Counted(3),
        ]
    );
    assert_eq!(
        counted[5..],
        [
            Allowance::Counted(2),
            Allowance::BudgetExhausted,
            Allowance::BudgetExhausted
        ]
    );
    sink.rollback();
    assert_eq!(s.budget_used(&a).await.unwrap(), 0);
    // With a grant among them: the grant is used once, with its unit.
    db.exec(
        "INSERT INTO grants (id, mission_id, policy, created_at, max_uses) \
         VALUES ('once', $1, 'permit(principal, action, resource);', 0, 1)",
        &[a.as_str()],
    )
    .await;
    let with_grant = [
        ask(&a, 3, Some("once")),
        ask(&b, 2, None),
        ask(&a, 3, Some("once")),
        ask(&a, 3, None),
    ];
    let expected = [
        Allowance::Counted(1),
        Allowance::Counted(1),
        Allowance::GrantUnavailable,
        Allowance::Counted(2),
    ];
    sink.begin().unwrap();
    assert_eq!(sink.count_all(&with_grant).unwrap(), expected);
    sink.rollback();
    assert_eq!(sink.begin_counting(&with_grant).unwrap().1, expected);
    sink.commit().unwrap();
    assert_eq!(s.budget_used(&a).await.unwrap(), 2);
    assert_eq!(s.budget_used(&b).await.unwrap(), 1);
    assert!(s.live_grants(&a, now).await.unwrap().is_empty());

    // A gateway's group counts its calls with its claims, as if every
    // call were fresh (on PostgreSQL in the same exchange; elsewhere
    // nothing is counted early). With a replay among them, those counts
    // are undone, the claims kept, and only the fresh call is counted.
    let later = UnixTime(wall_clock().0 + 600);
    let two = [ask(&b, 10, None), ask(&b, 10, None)];
    sink.begin().unwrap();
    assert_eq!(sink.claim_all(&[("seen", later)]).unwrap(), [true]);
    sink.commit().unwrap();
    let (_, taken, counted) = sink
        .begin_claiming_counting(&[("seen", later), ("new", later)], &two)
        .unwrap();
    assert_eq!(taken, [false, true]);
    assert_eq!(counted.is_some(), db.backend == Backend::Postgres);
    if let Some(counted) = counted {
        assert_eq!(counted, [Allowance::Counted(2), Allowance::Counted(3)]);
        sink.undo_counts().unwrap();
    }
    assert_eq!(sink.count_all(&two[..1]).unwrap(), [Allowance::Counted(2)]);
    sink.commit().unwrap();
    assert_eq!(s.budget_used(&b).await.unwrap(), 2);
    // Every claim fresh: the counts stand as made.
    let (_, taken, counted) = sink
        .begin_claiming_counting(&[("third", later)], &two[..1])
        .unwrap();
    assert_eq!(taken, [true]);
    let counted = match counted {
        Some(c) => c,
        None => sink.count_all(&two[..1]).unwrap(),
    };
    assert_eq!(counted, [Allowance::Counted(3)]);
    sink.commit().unwrap();
    assert_eq!(s.budget_used(&b).await.unwrap(), 3);
    // Both groups' claims were kept: replays now.
    sink.begin().unwrap();
    assert_eq!(
        sink.claim_all(&[("new", later), ("third", later)]).unwrap(),
        [false, false]
    );
    sink.rollback();
    // A count through a grant is not made before the claims are known.
    if db.backend == Backend::Postgres {
        assert!(
            sink.begin_claiming_counting(&[("fourth", later)], &with_grant[..1])
                .is_err()
        );
        sink.rollback();
    }
}

async fn a_mission_is_read_with_its_count_and_live_grants(db: Db) {
    let s = db.store();
    seed(s.as_ref()).await;
    let now = T0.plus(2);
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    assert!(
        s.mission_snapshot(&MissionId::generate(&OsRandom).unwrap(), now)
            .await
            .unwrap()
            .is_none()
    );
    start(s.as_ref(), &token).await;
    // Two live grants (one pattern, one for an exact call), one spent, one
    // revoked, one expired.
    for (grant, scope, digest, extra) in [
        ("g-b", "pattern", None, ""),
        ("g-a", "once", Some("d1"), ""),
        ("g-spent", "pattern", None, ", uses = 1"),
        ("g-revoked", "pattern", None, ", revoked_at = 1"),
        ("g-expired", "pattern", None, ", expires_at = 1"),
    ] {
        db.exec(
            "INSERT INTO grants (id, mission_id, policy, created_at, max_uses, scope, request_digest, created_by) \
             VALUES ($1, $2, 'permit(principal, action, resource);', 0, 1, $3, $4, 'bob')",
            &[grant, id.as_str(), scope, digest.unwrap_or("")],
        )
        .await;
        if digest.is_none() {
            db.exec(
                "UPDATE grants SET request_digest = NULL WHERE id = $1",
                &[grant],
            )
            .await;
        }
        if !extra.is_empty() {
            db.exec(
                &format!("UPDATE grants SET {} WHERE id = $1", &extra[2..]),
                &[grant],
            )
            .await;
        }
    }
    let mut sink = s.audit_sink().unwrap();
    sink.begin().unwrap();
    sink.count(&id, 10, None, now).unwrap();
    sink.commit().unwrap();
    let state = s.mission_snapshot(&id, now).await.unwrap().unwrap();
    assert_eq!(state.mission(), &s.mission(&id).await.unwrap().unwrap());
    assert_eq!(state.budget_used(), 1);
    assert_eq!(
        state.grants(),
        s.live_grants(&id, now).await.unwrap().as_slice()
    );
    let grants: Vec<_> = state
        .grants()
        .iter()
        .map(|g| {
            (
                g.id.as_str(),
                g.request_digest.as_deref(),
                g.created_by.as_str(),
            )
        })
        .collect();
    assert_eq!(grants, [("g-a", Some("d1"), "bob"), ("g-b", None, "bob")]);
    // An ended mission has no live grants.
    s.end_mission(&id, mandate_core::EndReason::Completed, "alice", now)
        .await
        .unwrap();
    let state = s.mission_snapshot(&id, now).await.unwrap().unwrap();
    assert!(state.grants().is_empty());
    assert_eq!(state.budget_used(), 1);
}

/// `token_and_snapshot` answers what `principal_by_token` and
/// `mission_snapshot` answer, each side on its own: a live token with an
/// unknown mission, an unknown token with a live mission, a revoked token,
/// a revoked principal.
async fn an_api_token_and_a_mission_are_read_together(db: Db) {
    let s = db.store();
    seed(s.as_ref()).await;
    let now = T0.plus(2);
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    start(s.as_ref(), &token).await;
    db.exec(
        "INSERT INTO grants (id, mission_id, policy, created_at, max_uses, scope, request_digest, created_by) \
         VALUES ('g-1', $1, 'permit(principal, action, resource);', 0, 3, 'once', 'd1', 'bob')",
        &[id.as_str()],
    )
    .await;
    let mut sink = s.audit_sink().unwrap();
    sink.begin().unwrap();
    sink.count(&id, 10, None, now).unwrap();
    sink.commit().unwrap();
    let tok = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    let rec = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        principal: "bob".parse().unwrap(),
        label: "gateway".into(),
        created_at: T0,
        revoked_at: None,
    };
    s.create_api_token(&rec, &tok.hash()).await.unwrap();
    let unknown_mission = MissionId::generate(&OsRandom).unwrap();
    let unknown_token = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();

    let (caller, snapshot) = s.token_and_snapshot(&tok.hash(), &id, now).await.unwrap();
    assert_eq!(caller, s.principal_by_token(&tok.hash()).await.unwrap());
    let (principal, token_id) = caller.unwrap();
    assert_eq!(
        (principal.name.as_str(), principal.role),
        ("bob", Role::Member)
    );
    assert_eq!(token_id, rec.id);
    let snapshot = snapshot.unwrap();
    let alone = s.mission_snapshot(&id, now).await.unwrap().unwrap();
    assert_eq!(snapshot.mission(), alone.mission());
    assert_eq!(snapshot.budget_used(), 1);
    assert_eq!(snapshot.grants(), alone.grants());
    assert_eq!(snapshot.grants().len(), 1);

    let (caller, snapshot) = s
        .token_and_snapshot(&tok.hash(), &unknown_mission, now)
        .await
        .unwrap();
    assert!(caller.is_some());
    assert!(snapshot.is_none());
    // A token that is not live answers nothing of the mission (below, not
    // even for a mission whose row no longer reads).
    let (caller, snapshot) = s
        .token_and_snapshot(&unknown_token.hash(), &id, now)
        .await
        .unwrap();
    assert!(caller.is_none());
    assert!(snapshot.is_none());

    // A revoked token, then a token of a revoked principal, resolve to no
    // one, and nothing of the mission comes back.
    s.revoke_api_token(
        &rec.id,
        &Revocation {
            kind: RevocationKind::Token,
            target: rec.id.to_string(),
            reason: "rotated".into(),
            revoked_by: "bob".parse().unwrap(),
            at: T0.plus(3),
        },
    )
    .await
    .unwrap();
    let (caller, snapshot) = s.token_and_snapshot(&tok.hash(), &id, now).await.unwrap();
    assert!(caller.is_none());
    assert!(snapshot.is_none());
    let tok2 = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    let rec2 = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        ..rec
    };
    s.create_api_token(&rec2, &tok2.hash()).await.unwrap();
    assert!(
        s.token_and_snapshot(&tok2.hash(), &id, now)
            .await
            .unwrap()
            .0
            .is_some()
    );
    db.exec(
        "UPDATE principals SET revoked_at = 4 WHERE name = $1",
        &["bob"],
    )
    .await;
    assert!(
        s.token_and_snapshot(&tok2.hash(), &id, now)
            .await
            .unwrap()
            .0
            .is_none()
    );
    // The mission's row edited behind the store: a live token's read
    // fails (the body no longer matches its hash); a token that is not
    // live still answers only that it is not.
    db.exec(
        "UPDATE missions SET body = replace(body, 'reconcile invoices', 'wire all the money')",
        &[],
    )
    .await;
    let (caller, snapshot) = s.token_and_snapshot(&tok2.hash(), &id, now).await.unwrap();
    assert!(caller.is_none() && snapshot.is_none());
    let tok3 = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    let rec3 = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        principal: "alice".parse().unwrap(),
        label: "laptop".into(),
        created_at: T0,
        revoked_at: None,
    };
    s.create_api_token(&rec3, &tok3.hash()).await.unwrap();
    assert!(s.token_and_snapshot(&tok3.hash(), &id, now).await.is_err());
}

async fn identical_escalations_join_and_the_queue_is_bounded(db: Db) {
    use mandate_store::NewApproval;
    let s = db.store();
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
        taint: None,
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

async fn an_approval_is_decided_once_and_its_grant_dies_with_the_mission(db: Db) {
    use mandate_core::GrantScope;
    use mandate_store::{ApprovalError, ApprovalStatus, NewApproval, NewGrant, Resolution};
    let s = db.store();
    seed(s.as_ref()).await;
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    start(s.as_ref(), &token).await;
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
        taint: None,
    };
    assert_eq!(s.pending_approvals().await.unwrap(), 0);
    s.open_approval(&open("apr_a", 600), 10).await.unwrap();
    s.open_approval(&open("apr_b", 5), 10).await.unwrap();
    assert_eq!(s.pending_approvals().await.unwrap(), 2);
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
    assert_eq!(s.pending_approvals().await.unwrap(), 1);
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
    assert_eq!(s.pending_approvals().await.unwrap(), 0);
    // Ending the mission kills its grants.
    s.open_approval(&open("apr_c", 600), 10).await.unwrap();
    s.end_mission(&id, mandate_core::EndReason::Completed, "alice", now)
        .await
        .unwrap();
    assert!(s.live_grants(&id, now).await.unwrap().is_empty());
    // A request whose mission ended is refused for that reason, whether
    // or not the sweep has marked it expired since (its own time has not
    // run out).
    for sweep in [false, true] {
        if sweep {
            let swept = s.expire_approvals(now).await.unwrap();
            assert_eq!(swept.len(), 1);
        }
        assert!(matches!(
            s.resolve_approval("apr_c", "carol", "", &grant("grt_y"), now)
                .await,
            Err(ApprovalError::MissionNotActive)
        ));
    }
}

/// The audit log in a real database: edits, deletions, reordering and
/// truncation made directly in it are found, and named by sequence.
async fn audit_tampering_in_the_database_is_found(mut db: Db) {
    use mandate_core::{AuthorityKey, Cadence, ChainHead, sign_checkpoint, verify_chain};
    const ISS: &str = "https://mandate.example";
    let key = AuthorityKey::generate(&OsRandom).unwrap();
    {
        let s = db.store();
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
        // A record that does not follow the head is refused — when it is
        // appended, or (PostgreSQL writes a group's records with its
        // commit) when its group commits — and nothing of its group is kept.
        let mut stale = ChainHead::genesis();
        let r = stale.append(1, "decision", serde_json::json!({})).unwrap();
        let mut sink = s.audit_sink().unwrap();
        sink.begin().unwrap();
        match sink.append(&r) {
            Err(e) => {
                assert!(matches!(e, StoreError::Conflict(_)), "{e}");
                sink.rollback();
            }
            Ok(()) => assert!(sink.commit().is_err()),
        }
        assert_eq!(s.audit_head().await.unwrap(), head);
    }
    db.reopen().await;
    let verify = || async {
        let s = db.open().await;
        let records = s.audit_records(0, 1_000).await.unwrap();
        let cps = s.checkpoints().await.unwrap();
        verify_chain(ChainHead::genesis(), records, &cps, &key.jwks(), Some(ISS))
    };
    assert_eq!(verify().await.unwrap().last, 20);
    let exec = |sql: &'static str| db.exec(sql, &[]);

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

fn wall_clock() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

/// A signed request's key is claimed once, by whichever writer (node)
/// comes first; a refused claim leaves the group usable; a claim undone
/// with its group, or expired, does not block the key.
async fn a_replayed_key_is_claimed_once(db: Db) {
    let other = db.open().await;
    let s = db.store();
    let mut a = s.audit_sink().unwrap();
    let mut b = other.audit_sink().unwrap();
    let later = wall_clock().plus(300);

    let mut head = a.begin().unwrap();
    assert!(a.claim("k1", later).unwrap());
    a.append(
        &head
            .append(1, "decision", serde_json::json!({"n": 1}))
            .unwrap(),
    )
    .unwrap();
    a.commit().unwrap();

    // The second writer is refused, and its group still commits.
    let mut head = b.begin().unwrap();
    assert!(!b.claim("k1", later).unwrap());
    assert!(b.claim("k2", later).unwrap());
    b.append(
        &head
            .append(2, "decision", serde_json::json!({"n": 2}))
            .unwrap(),
    )
    .unwrap();
    b.commit().unwrap();
    assert_eq!(s.audit_head().await.unwrap(), head);

    // So is the first writer, for the other's key.
    a.begin().unwrap();
    assert!(!a.claim("k2", later).unwrap());
    a.commit().unwrap();

    // A claim rolled back with its group is not kept.
    a.begin().unwrap();
    assert!(a.claim("k3", later).unwrap());
    a.rollback();
    b.begin().unwrap();
    assert!(b.claim("k3", later).unwrap());
    b.commit().unwrap();

    // An expired claim no longer blocks its key.
    a.begin().unwrap();
    assert!(a.claim("k4", UnixTime(wall_clock().0 - 1)).unwrap());
    a.commit().unwrap();
    b.begin().unwrap();
    assert!(b.claim("k4", later).unwrap());
    assert!(!b.claim("k4", later).unwrap());
    b.commit().unwrap();

    // A group opened with its claims (one exchange on PostgreSQL): the
    // same head and the same answers; rolled back, none is kept.
    let (opened, taken) = b
        .begin_claiming(&[("k1", later), ("k7", later), ("k2", later)])
        .unwrap();
    assert_eq!(opened, s.audit_head().await.unwrap());
    assert_eq!(taken, [false, true, false]);
    b.rollback();
    let (_, taken) = a.begin_claiming(&[("k7", later)]).unwrap();
    assert_eq!(taken, [true]);
    a.rollback();

    // Many at once (a group's claims): the same answers, in order, and a
    // replay among fresh keys does not spoil them.
    a.begin().unwrap();
    assert_eq!(
        a.claim_all(&[("k5", later), ("k1", later), ("k6", later)])
            .unwrap(),
        [true, false, true]
    );
    a.commit().unwrap();
    b.begin().unwrap();
    assert_eq!(
        b.claim_all(&[("k6", later), ("k7", later)]).unwrap(),
        [false, true]
    );
    b.rollback();
    b.begin().unwrap();
    assert_eq!(b.claim_all(&[("k7", later)]).unwrap(), [true]);
    b.commit().unwrap();
}

/// A proof's single use taken outside an audit group (`Store::claim`): once
/// across stores on one database (and across a reopen), shared with the
/// audit groups' claims, free again once expired.
async fn a_proof_is_claimed_once_outside_the_audit_groups(db: Db) {
    let s = db.store();
    let other = db.open().await;
    let now = wall_clock();
    let later = now.plus(60);
    assert!(s.claim("p1", later, now).await.unwrap());
    assert!(!s.claim("p1", later, now).await.unwrap());
    assert!(!other.claim("p1", later, now).await.unwrap());
    // The same table as the audit groups' claims.
    let mut sink = other.audit_sink().unwrap();
    sink.begin().unwrap();
    assert!(!sink.claim("p1", later).unwrap());
    assert!(sink.claim("p2", later).unwrap());
    sink.commit().unwrap();
    assert!(!s.claim("p2", later, now).await.unwrap());
    // Once expired, the key is free again.
    assert!(s.claim("p1", later.plus(60), later).await.unwrap());
}

/// Nodes judge a claim's expiry by their own clocks: a node whose clock
/// runs 90 s ahead sweeping expired claims leaves the ones that a node on
/// time still relies on.
async fn a_claim_outlives_a_sweep_by_a_node_whose_clock_runs_ahead(db: Db) {
    let on_time = db.store();
    let ahead = db.open().await;
    let t = wall_clock();
    assert!(on_time.claim("skewed", t.plus(60), t).await.unwrap());
    // The other node's first claim sweeps what it takes for expired.
    assert!(ahead.claim("other", t.plus(150), t.plus(90)).await.unwrap());
    // 30 s later on the node on time, the proof is still fresh there: its
    // replay must still be refused.
    assert!(
        !on_time
            .claim("skewed", t.plus(60), t.plus(30))
            .await
            .unwrap()
    );
}

// --- PostgreSQL only: several nodes on one database ---

async fn two_nodes() -> (Db, Arc<dyn Store>, Arc<dyn Store>) {
    let db = Db::new(Backend::Postgres).await;
    let a = db.store();
    let b = db.open().await;
    (db, a, b)
}

/// Two nodes race one start token: exactly one start wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_nodes_race_one_start_token() {
    let (_db, a, b) = two_nodes().await;
    seed(a.as_ref()).await;
    for _ in 0..5 {
        let (id, token) = new_mission(a.as_ref(), "alice", "bot-a").await;
        let mut tasks = Vec::new();
        for n in 0..8 {
            let s = if n % 2 == 0 { a.clone() } else { b.clone() };
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
        assert_eq!(
            b.mission(&id).await.unwrap().unwrap().jkt(),
            Some(&winners[0])
        );
    }
}

/// Two nodes' audit writers count one budget of 10 at once, on two
/// threads: exactly 10 calls are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_writers_spend_a_budget_exactly() {
    use mandate_store::Allowance;
    let (_db, a, b) = two_nodes().await;
    seed(a.as_ref()).await;
    let (id, token) = new_mission(a.as_ref(), "alice", "bot-a").await;
    start(a.as_ref(), &token).await;
    let mut threads = Vec::new();
    for s in [a.clone(), b.clone()] {
        let mut sink = s.audit_sink().unwrap();
        let id = id.clone();
        threads.push(std::thread::spawn(move || {
            let mut counted = Vec::new();
            for _ in 0..15 {
                sink.begin().unwrap();
                // Two calls per group, as a group commit has several.
                for _ in 0..2 {
                    if let Allowance::Counted(n) = sink.count(&id, 10, None, T0.plus(2)).unwrap() {
                        counted.push(n);
                    }
                }
                sink.commit().unwrap();
            }
            counted
        }));
    }
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    assert_eq!(b.budget_used(&id).await.unwrap(), 10);
}

/// Two nodes' audit writers append groups at once: each group follows the
/// other's last record (`begin` returns it), and the result is one chain
/// that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_writers_append_one_chain() {
    use mandate_core::{AuthorityKey, Cadence, ChainHead, sign_checkpoint, verify_chain};
    const ISS: &str = "https://mandate.example";
    let (_db, a, b) = two_nodes().await;

    // Alternately: each begin returns the other's head.
    let mut sa = a.audit_sink().unwrap();
    let mut sb = b.audit_sink().unwrap();
    let mut expected = ChainHead::genesis();
    for round in 0..3u64 {
        for (node, sink) in [("a", &mut sa), ("b", &mut sb)] {
            let mut head = sink.begin().unwrap();
            assert_eq!(head, expected, "round {round}, node {node}");
            for i in 0..3 {
                let r = head
                    .append(round, "decision", serde_json::json!({"node": node, "i": i}))
                    .unwrap();
                sink.append(&r).unwrap();
            }
            sink.commit().unwrap();
            expected = head;
        }
    }

    // At once, from two threads.
    let mut threads = Vec::new();
    for (node, mut sink) in [("a", sa), ("b", sb)] {
        threads.push(std::thread::spawn(move || {
            for g in 0..20u64 {
                let mut head = sink.begin().unwrap();
                for i in 0..3 {
                    let r = head
                        .append(
                            10 + g,
                            "decision",
                            serde_json::json!({"node": node, "i": i}),
                        )
                        .unwrap();
                    sink.append(&r).unwrap();
                }
                sink.commit().unwrap();
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let head = a.audit_head().await.unwrap();
    assert_eq!(head.seq, 18 + 120);
    let key = AuthorityKey::generate(&OsRandom).unwrap();
    a.add_checkpoint(
        head.seq,
        &sign_checkpoint(&key, ISS, &head, 2_000, Cadence::default()).unwrap(),
    )
    .await
    .unwrap();
    let records = b.audit_records(0, 1_000).await.unwrap();
    let cps = b.checkpoints().await.unwrap();
    let report = verify_chain(ChainHead::genesis(), records, &cps, &key.jwks(), Some(ISS)).unwrap();
    assert_eq!(report.last, head.seq);
}

async fn next_change(
    rx: &mut tokio::sync::broadcast::Receiver<mandate_store::Change>,
) -> mandate_store::Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no change arrived within 10 s")
        .unwrap()
}

/// A revocation on node A reaches node B's subscribers, not A's own; a
/// revocation that fails (and so does not commit) is not announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_reach_the_other_node_only() {
    use mandate_store::Change;
    let (_db, a, b) = two_nodes().await;
    let mut on_a = a.subscribe().unwrap();
    let mut on_b = b.subscribe().unwrap();
    seed(a.as_ref()).await;
    let (id, _) = new_mission(a.as_ref(), "alice", "bot-a").await;
    let revoke = |target: &str| Revocation {
        kind: RevocationKind::Mission,
        target: target.into(),
        reason: "test".into(),
        revoked_by: "bob".parse().unwrap(),
        at: T0.plus(10),
    };
    a.revoke(&revoke(id.as_str())).await.unwrap();
    assert_eq!(next_change(&mut on_b).await, Change::Revoked);

    // Refused (no such mission): rolled back, nothing sent.
    assert!(matches!(
        a.revoke(&revoke("msn_none")).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    b.announce(&Change::Policies).await.unwrap();
    // A's first notice is B's: its own revocation never came back to it.
    assert_eq!(next_change(&mut on_a).await, Change::Policies);
    a.announce(&Change::Approval("apr_1".into())).await.unwrap();
    // B's next is that one: the refused revocation sent nothing.
    assert_eq!(
        next_change(&mut on_b).await,
        Change::Approval("apr_1".into())
    );

    // Ending a mission is announced with its id.
    let (id2, _) = new_mission(a.as_ref(), "alice", "bot-a").await;
    b.end_mission(
        &id2,
        mandate_core::EndReason::Completed,
        "alice",
        T0.plus(5),
    )
    .await
    .unwrap();
    assert_eq!(next_change(&mut on_a).await, Change::Mission(id2));
    // Nothing else is waiting on either side.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(on_a.try_recv().is_err());
    assert!(on_b.try_recv().is_err());
}

/// When the connection that receives notices is killed, subscribers are
/// told `Lost` once it is back, and changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lost_listener_says_lost_and_recovers() {
    use mandate_store::Change;
    let (db, a, b) = two_nodes().await;
    let mut on_b = b.subscribe().unwrap();
    let killed = db
        .scalar(&format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN %' AND query LIKE '%{}%'",
            db.schema
        ))
        .await;
    assert_eq!(killed, 2, "both nodes' listeners");
    assert_eq!(next_change(&mut on_b).await, Change::Lost);
    a.announce(&Change::Policies).await.unwrap();
    assert_eq!(next_change(&mut on_b).await, Change::Policies);
}

/// The decision path's reads (a mission's snapshot) go to the database
/// on every call: a revocation made on another node is seen by the next
/// read. When their connections are cut, a read fails (it never answers
/// "no such mission" for one that exists) and the next ones open new
/// connections and answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_see_revocations_at_once_and_recover_a_cut_connection() {
    let (db, a, b) = two_nodes().await;
    seed(a.as_ref()).await;
    let (id, _) = running_root(a.as_ref()).await;
    let state = |s: Option<mandate_store::MissionSnapshot>| s.map(|s| s.mission().status.clone());
    for _ in 0..4 {
        let read = b.mission_snapshot(&id, T0.plus(2)).await.unwrap();
        assert!(matches!(state(read), Some(MissionStatus::Active { .. })));
    }
    a.revoke(&Revocation {
        kind: RevocationKind::Mission,
        target: id.to_string(),
        reason: "test".into(),
        revoked_by: "bob".parse().unwrap(),
        at: T0.plus(3),
    })
    .await
    .unwrap();
    let read = b.mission_snapshot(&id, T0.plus(4)).await.unwrap();
    assert!(matches!(state(read), Some(MissionStatus::Ended { .. })));

    let killed = db
        .scalar(&format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'mandate-reads {}'",
            db.schema
        ))
        .await;
    assert!(killed >= 2, "both nodes' read connections ({killed})");
    let mut failed = 0;
    for i in 0..8 {
        match b.mission_snapshot(&id, T0.plus(5)).await {
            Ok(read) => assert!(matches!(state(read), Some(MissionStatus::Ended { .. }))),
            Err(e) => {
                assert!(i < 2, "read {i} still failing: {e}");
                failed += 1;
            }
        }
    }
    assert!(failed <= 2);

    // A read the server does not answer (the table locked by a
    // transaction that does not end, as a migration's would) fails within
    // its bound instead of holding the request; once the lock is gone,
    // reads answer again.
    let locker = Locker::lock(&db, "missions").await;
    let started = std::time::Instant::now();
    assert!(b.mission_snapshot(&id, T0.plus(6)).await.is_err());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    locker.release().await;
    let read = b.mission_snapshot(&id, T0.plus(7)).await.unwrap();
    assert!(matches!(state(read), Some(MissionStatus::Ended { .. })));
}

/// An audit call the server does not answer (the log's table locked by a
/// transaction that does not end, as a migration's would; a network path
/// that died looks the same from here) fails within its bound, 10 s,
/// instead of holding the writer and every decision behind it; the
/// connection is dropped, and once the server answers again the next
/// group commits on a new one, continuing the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_audit_call_the_server_does_not_answer_fails_within_its_bound() {
    let db = Db::new(Backend::Postgres).await;
    let s = db.store();
    let mut sink = s.audit_sink().unwrap();
    let mut head = sink.begin().unwrap();
    sink.append(
        &head
            .append(1, "decision", serde_json::json!({"n": 1}))
            .unwrap(),
    )
    .unwrap();
    sink.commit().unwrap();

    let locker = Locker::lock(&db, "audit_events").await;
    let started = std::time::Instant::now();
    // The opening reads the head, behind the lock.
    let e = sink.begin().unwrap_err().to_string();
    let took = started.elapsed();
    assert!(e.contains("did not answer within 10 s"), "{e}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "{took:?}"
    );
    locker.release().await;
    // Nothing of the failed group was kept; the next one follows the
    // first.
    assert_eq!(sink.begin().unwrap(), head);
    sink.append(
        &head
            .append(3, "decision", serde_json::json!({"n": 3}))
            .unwrap(),
    )
    .unwrap();
    sink.commit().unwrap();
    assert_eq!(s.audit_head().await.unwrap(), head);
    assert_eq!(head.seq, 2);
}

/// A group made on the writer's predictions (on PostgreSQL, sent whole
/// with its commit, in one exchange) is kept only where every prediction
/// held: the log's head, each claim fresh, each budget count. Where one
/// did not, nothing of the group is kept (no record, no claim, no count,
/// no seal), the sink says so, and the next group goes on, on the same
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_group_made_on_predictions_is_kept_only_where_each_held() {
    use mandate_core::ChainHead;
    use mandate_store::{Allowance, AuditSink, CountAsk, PredictedCommit, Prediction};
    let db = Db::new(Backend::Postgres).await;
    let s = db.store();
    seed(s.as_ref()).await;
    let now = T0.plus(2);
    let (id, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    start(s.as_ref(), &token).await;
    let ask = CountAsk {
        mission: id.clone(),
        budget: 5,
        grant: None,
        now,
    };
    let later = UnixTime(wall_clock().0 + 600);
    let mut sink = s.audit_sink().unwrap();
    assert!(sink.predicts());
    // A first group as usual.
    let (mut head, counted) = sink.begin_counting(std::slice::from_ref(&ask)).unwrap();
    assert_eq!(counted, [Allowance::Counted(1)]);
    let first = head
        .append(1, "decision", serde_json::json!({"n": 1}))
        .unwrap();
    sink.append(&first).unwrap();
    sink.seal_head(head.seq, "seal-1").unwrap();
    sink.commit().unwrap();
    // A group predicted to follow `at`, take `claims` and count the
    // mission once for each of `counts`, to it.
    let predicted = |sink: &mut Box<dyn AuditSink>,
                     at: &ChainHead,
                     claims: &[(&str, UnixTime)],
                     counts: &[u64]| {
        let mut next = at.clone();
        let record = next
            .append(2, "decision", serde_json::json!({"n": counts}))
            .unwrap();
        let held = sink
            .commit_predicted(Prediction {
                head: at,
                claims,
                asks: &vec![ask.clone(); counts.len()],
                counts,
                records: vec![record],
                seal: (next.seq, format!("seal-{}", next.seq)),
            })
            .unwrap();
        assert_ne!(held, PredictedCommit::NotSent);
        (held == PredictedCommit::Committed, next)
    };
    let (held, next) = predicted(&mut sink, &head, &[("k1", later)], &[2]);
    assert!(held);
    assert_eq!(s.audit_head().await.unwrap(), next);
    assert_eq!(s.budget_used(&id).await.unwrap(), 2);
    assert_eq!(s.head_seal().await.unwrap().as_deref(), Some("seal-2"));
    let before = std::mem::replace(&mut head, next);
    for (why, at, claim, count) in [
        ("the head moved", &before, "k2", 3),
        ("a claim was taken (a replay)", &head, "k1", 3),
        ("the count", &head, "k2", 4),
    ] {
        let (held, _) = predicted(&mut sink, at, &[(claim, later)], &[count]);
        assert!(!held, "{why}");
        assert_eq!(s.audit_head().await.unwrap(), head, "{why}");
        assert_eq!(s.budget_used(&id).await.unwrap(), 2, "{why}");
        assert_eq!(
            s.head_seal().await.unwrap().as_deref(),
            Some("seal-2"),
            "{why}"
        );
    }
    // `k2` was not kept by the groups that missed: this one takes it.
    let (held, next) = predicted(&mut sink, &head, &[("k2", later)], &[3]);
    assert!(held);
    head = next;
    assert_eq!(s.budget_used(&id).await.unwrap(), 3);
    // Two calls of one mission in a group are counted in two rounds, each
    // to its own prediction.
    let (held, _) = predicted(&mut sink, &head, &[], &[4, 4]);
    assert!(!held);
    assert_eq!(s.budget_used(&id).await.unwrap(), 3);
    let (held, next) = predicted(&mut sink, &head, &[], &[4, 5]);
    assert!(held);
    head = next;
    assert_eq!(s.budget_used(&id).await.unwrap(), 5);
    // The budget is spent: a count past it is not made.
    let (held, _) = predicted(&mut sink, &head, &[], &[6]);
    assert!(!held);
    assert_eq!(s.budget_used(&id).await.unwrap(), 5);
    // The same connection runs the next group as usual, and the log is
    // the three records, chained.
    assert_eq!(
        sink.begin_counting(std::slice::from_ref(&ask)).unwrap(),
        (head.clone(), vec![Allowance::BudgetExhausted])
    );
    sink.rollback();
    let records = s.audit_records(0, 10).await.unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0], first);
    let mut chained = ChainHead::genesis();
    for r in &records {
        assert_eq!(&chained.append(r.time, &r.kind, r.body.clone()).unwrap(), r);
    }
    assert_eq!(chained, head);
    let counts: Vec<_> = records.iter().map(|r| r.body["n"].clone()).collect();
    assert_eq!(
        counts,
        [
            serde_json::json!(1),
            serde_json::json!([2]),
            serde_json::json!([3]),
            serde_json::json!([4, 5])
        ]
    );
    sink.begin().unwrap();
    assert_eq!(
        sink.claim_all(&[("k1", later), ("k2", later), ("k3", later)])
            .unwrap(),
        [false, false, true]
    );
    sink.rollback();
    // A group without counts or claims, predicted to follow `at`.
    let plain = |sink: &mut Box<dyn AuditSink>, at: &ChainHead| {
        let mut next = at.clone();
        let record = next.append(9, "event", serde_json::json!({})).unwrap();
        let done = sink
            .commit_predicted(Prediction {
                head: at,
                claims: &[],
                asks: &[],
                counts: &[],
                records: vec![record],
                seal: (next.seq, "seal".into()),
            })
            .unwrap();
        (done, next)
    };
    // The head rewritten where it stands (no later record for the new
    // one's key to collide with): only the head's guard sees it.
    db.exec(
        "UPDATE audit_events SET hash = 'rewritten' WHERE seq = 4",
        &[],
    )
    .await;
    assert_eq!(plain(&mut sink, &head).0, PredictedCommit::NotKept);
    assert_eq!(s.audit_records(0, 10).await.unwrap().len(), 4);
    db.exec(
        "UPDATE audit_events SET hash = $1 WHERE seq = 4",
        &[head.hash.as_str()],
    )
    .await;
    // A connection the server ended (a restart, an idle timeout) answers
    // the group's first statement with its `FATAL` error: nothing was
    // kept, and the next group connects again.
    let killed = db
        .scalar(&format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'mandate-audit {}'",
            db.schema
        ))
        .await;
    assert_eq!(killed, 1);
    assert_eq!(plain(&mut sink, &head).0, PredictedCommit::NotKept);
    assert_eq!(sink.begin().unwrap(), head);
    sink.rollback();
    let (done, next) = plain(&mut sink, &head);
    assert_eq!(done, PredictedCommit::Committed);
    head = next;
    // A lock the group waits for (a migration's, a stalled node's) is
    // given up after 10 s, before the `COMMIT`: nothing is kept, where
    // waiting on with the `COMMIT` sent would leave the outcome unknown.
    let locker = Locker::lock(&db, "audit_events").await;
    let started = std::time::Instant::now();
    assert_eq!(plain(&mut sink, &head).0, PredictedCommit::NotKept);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "{took:?}"
    );
    locker.release().await;
    let (done, next) = plain(&mut sink, &head);
    assert_eq!(done, PredictedCommit::Committed);
    head = next;
    // A connection idle for more than a second is not sent a group on
    // predictions at all.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(plain(&mut sink, &head).0, PredictedCommit::NotSent);
    assert_eq!(s.audit_head().await.unwrap(), head);
}

/// A session of its own holding a table of `db`'s schema locked, as a
/// migration's transaction would: the store's statements on it wait.
/// Should a bound under test not hold, the lock goes with the session
/// after 30 s, and the test's assertions say how long the call took.
struct Locker(sqlx::PgConnection);

impl Locker {
    async fn lock(db: &Db, table: &str) -> Self {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET idle_in_transaction_session_timeout = '30s'; BEGIN; \
             LOCK TABLE {}.{table} IN ACCESS EXCLUSIVE MODE",
            db.schema
        )))
        .execute(&mut c)
        .await
        .unwrap();
        Self(c)
    }

    async fn release(mut self) {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut self.0)
            .await
            .unwrap();
    }
}

/// SQLite has no other process to hear from.
#[tokio::test]
async fn sqlite_has_no_change_feed() {
    let db = Db::new(Backend::Sqlite).await;
    let s = db.store();
    assert!(s.subscribe().is_none());
    s.announce(&mandate_store::Change::Revoked).await.unwrap();
}

/// Several nodes starting at once on an empty schema: each connects, the
/// migrations run once (under the migrator's advisory lock), and all see
/// one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_starting_together_migrate_once() {
    // A schema nobody has created yet: every node creates and migrates it.
    let mut db = Db::new(Backend::Postgres).await;
    db.store = None;
    db.schema = format!("{}_fresh", db.schema);
    let schema = db.schema.clone();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { PostgresStore::connect_in_schema(&pg_url(), &schema).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.unwrap().unwrap());
    }
    // Each migration once.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .await,
        i64::try_from(migrations).unwrap()
    );
    nodes[0]
        .create_principal(&principal("alice", Role::Member))
        .await
        .unwrap();
    assert_eq!(nodes[3].principals().await.unwrap().len(), 1);
    drop(nodes);
    // The first schema is left behind by the swap above: drop it too.
    let first = schema.trim_end_matches("_fresh").to_owned();
    db.exec(&format!("DROP SCHEMA {first} CASCADE"), &[]).await;
}

/// A store's debug output does not show the database password.
#[tokio::test]
async fn postgres_debug_output_hides_the_password() {
    let db = Db::new(Backend::Postgres).await;
    let url = pg_url().replacen(
        "postgres://postgres@",
        "postgres://postgres:hunter2secret@",
        1,
    );
    let s = PostgresStore::connect_in_schema(&url, &db.schema)
        .await
        .unwrap();
    let shown = format!("{s:?} {:?}", s.audit_sink().unwrap());
    assert!(shown.contains("PostgresStore"), "{shown}");
    assert!(!shown.contains("hunter2secret"), "{shown}");
}

/// A schema name that would need quoting (or inject SQL) is refused.
#[tokio::test]
async fn postgres_refuses_a_schema_name_that_is_not_plain() {
    for bad in ["", "Caps", "1st", "a-b", "a; DROP TABLE x", "pg_catalog"] {
        assert!(
            PostgresStore::connect_in_schema(&pg_url(), bad)
                .await
                .is_err(),
            "{bad}"
        );
    }
}

async fn vault_secrets_change_only_from_the_version_they_replace(db: Db) {
    use mandate_store::VaultRecord;
    let s = db.store();
    seed(s.as_ref()).await;
    let rec = |version: u64, byte: u8| VaultRecord {
        principal: "alice".parse().unwrap(),
        route: "payments".into(),
        kind: "bearer".into(),
        version,
        nonce: vec![byte; 12],
        ciphertext: vec![0, byte, 255, 7],
        updated_at: T0,
        updated_by: "alice".into(),
    };
    s.put_vault_secret(&rec(1, 1), None).await.unwrap();
    assert!(matches!(
        s.put_vault_secret(&rec(1, 9), None).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    s.put_vault_secret(&rec(2, 2), Some(1)).await.unwrap();
    // A writer that read version 1 lost the race.
    assert!(matches!(
        s.put_vault_secret(&rec(2, 3), Some(1)).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    let alice = "alice".parse().unwrap();
    assert_eq!(
        s.vault_secret(&alice, "payments").await.unwrap(),
        Some(rec(2, 2))
    );
    assert_eq!(s.vault_secrets().await.unwrap(), vec![rec(2, 2)]);
    assert!(s.delete_vault_secret(&alice, "payments").await.unwrap());
    assert!(!s.delete_vault_secret(&alice, "payments").await.unwrap());
    assert_eq!(s.vault_secret(&alice, "payments").await.unwrap(), None);
}

async fn approvals_are_listed_to_who_may_see_and_decide_them(db: Db) {
    use mandate_store::{ApprovalFilter, ApprovalStatus, NewApproval};
    let s = db.store();
    seed(s.as_ref()).await;
    let (id, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let open = |n: &str, approvers: &[&str], at: u64| NewApproval {
        id: n.into(),
        mission: id.clone(),
        request_digest: format!("d-{n}"),
        action: "refund".into(),
        resource: "{}".into(),
        context: "{}".into(),
        context_digest: "c".into(),
        reason_code: "escalation".into(),
        policies: "[\"p1\"]".into(),
        justification: String::new(),
        summary: "refund".into(),
        approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
        step_up: approvers.is_empty(),
        created_at: T0.plus(at),
        expires_at: T0.plus(600),
        taint: None,
    };
    s.open_approval(&open("apr_own", &[], 1), 10).await.unwrap();
    s.open_approval(&open("apr_carol", &["carol", "dave"], 2), 10)
        .await
        .unwrap();
    let list = |f: ApprovalFilter| {
        let s = Arc::clone(&s);
        async move {
            s.approvals(&ApprovalFilter { limit: 10, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(ApprovalFilter::default()).await,
        ["apr_carol", "apr_own"],
        "newest first"
    );
    let who = |p: &str| Some(p.to_owned());
    assert_eq!(
        list(ApprovalFilter {
            decider: who("alice"),
            ..Default::default()
        })
        .await,
        ["apr_own"]
    );
    assert_eq!(
        list(ApprovalFilter {
            decider: who("dave"),
            ..Default::default()
        })
        .await,
        ["apr_carol"]
    );
    assert_eq!(
        list(ApprovalFilter {
            viewer: who("alice"),
            ..Default::default()
        })
        .await,
        ["apr_carol", "apr_own"]
    );
    assert!(
        list(ApprovalFilter {
            viewer: who("bob"),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(ApprovalFilter {
            status: Some(ApprovalStatus::Pending),
            mission: Some(id.clone()),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    let a = s.approval("apr_own").await.unwrap().unwrap();
    assert_eq!(a.goal, "reconcile invoices");
    assert_eq!(a.policies, ["p1"]);
    assert!(a.step_up);
    assert!(!a.ended_mission);
    assert_eq!(a.principal.as_str(), "alice");
    assert!(s.approval("apr_none").await.unwrap().is_none());
}

async fn webhooks_wait_in_order_until_delivered_or_given_up(db: Db) {
    let s = db.store();
    for (n, event) in ["approval.requested", "approval.decided", "mission.ended"]
        .iter()
        .enumerate()
    {
        s.enqueue_webhook(event, "{}", 1_000 + n as u64)
            .await
            .unwrap();
    }
    let pending = s.pending_webhooks(10).await.unwrap();
    assert_eq!(pending.len(), 3);
    assert_eq!(pending[0].event, "approval.requested");
    assert_eq!(pending[0].next_attempt_ms, 1_000);
    s.webhook_attempted(pending[0].id, true, None, None)
        .await
        .unwrap();
    s.webhook_attempted(pending[1].id, false, Some(9_000), Some("503"))
        .await
        .unwrap();
    s.webhook_attempted(pending[2].id, false, None, Some("gone"))
        .await
        .unwrap();
    let left = s.pending_webhooks(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event, "approval.decided");
    assert_eq!(left[0].attempts, 1);
    assert_eq!(left[0].next_attempt_ms, 9_000);
}

async fn audit_records_are_found_by_a_body_field(db: Db) {
    use mandate_core::ChainHead;
    let s = db.store();
    let mut sink = s.audit_sink().unwrap();
    let mut head = sink.begin().unwrap();
    assert_eq!(head, ChainHead::genesis());
    for (kind, approval) in [
        ("approval.opened", "apr_1"),
        ("approval.opened", "apr_2"),
        ("approval.decided", "apr_1"),
    ] {
        let r = head
            .append(
                1,
                kind,
                serde_json::json!({ "approval": approval, "note": "x" }),
            )
            .unwrap();
        sink.append(&r).unwrap();
    }
    sink.seal_head(head.seq, "seal-token").unwrap();
    sink.commit().unwrap();
    assert_eq!(sink.head().unwrap(), head);
    assert_eq!(sink.head_seal().unwrap().as_deref(), Some("seal-token"));
    assert_eq!(s.head_seal().await.unwrap().as_deref(), Some("seal-token"));
    assert_eq!(sink.records(1, 10).unwrap().len(), 2);
    let found = s
        .audit_find("approval.opened", None, "approval", "apr_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.seq, 2);
    assert_eq!(
        s.audit_find("approval.decided", None, "approval", "apr_1")
            .await
            .unwrap()
            .unwrap()
            .seq,
        3
    );
    assert!(
        s.audit_find("approval.decided", None, "approval", "apr_2")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.audit_record(2).await.unwrap().unwrap(), found);
    assert_eq!(s.prune_audit(1).await.unwrap(), 1);
    assert_eq!(s.audit_records(0, 10).await.unwrap().len(), 2);
}

async fn a_revoked_api_token_no_longer_authenticates(db: Db) {
    let s = db.store();
    seed(s.as_ref()).await;
    let tok = SecretToken::generate(TokenKind::Api, &OsRandom).unwrap();
    let rec = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        principal: "alice".parse().unwrap(),
        label: "laptop".into(),
        created_at: T0,
        revoked_at: None,
    };
    s.create_api_token(&rec, &tok.hash()).await.unwrap();
    let (p, id) = s.principal_by_token(&tok.hash()).await.unwrap().unwrap();
    assert_eq!(p.name.as_str(), "alice");
    assert_eq!(id, rec.id);
    let revoked = s
        .revoke_api_token(
            &rec.id,
            &Revocation {
                kind: RevocationKind::Token,
                target: rec.id.to_string(),
                reason: "lost laptop".into(),
                revoked_by: "alice".parse().unwrap(),
                at: T0.plus(5),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(T0.plus(5)));
    assert!(s.principal_by_token(&tok.hash()).await.unwrap().is_none());
    assert_eq!(
        s.api_tokens(&"alice".parse().unwrap()).await.unwrap(),
        vec![revoked]
    );
    // A token for a principal that does not exist is refused.
    let stray = ApiToken {
        id: mandate_core::ApiTokenId::generate(&OsRandom).unwrap(),
        principal: "zed".parse().unwrap(),
        ..rec
    };
    assert!(matches!(
        s.create_api_token(
            &stray,
            &SecretToken::generate(TokenKind::Api, &OsRandom)
                .unwrap()
                .hash()
        )
        .await
        .unwrap_err(),
        StoreError::NotFound(_)
    ));
}

/// A statement that fails inside an audit group (PostgreSQL refuses a NUL
/// in text) fails the group: `commit` says so rather than letting
/// PostgreSQL quietly roll back, and nothing of the group is kept. The
/// next group starts afresh. Records are written with the commit, or when
/// the group reads them back, whichever comes first.
#[tokio::test]
async fn postgres_a_failed_statement_fails_the_whole_group() {
    use mandate_core::ChainHead;
    let db = Db::new(Backend::Postgres).await;
    let s = db.store();
    let mut sink = s.audit_sink().unwrap();
    let mut head = sink.begin().unwrap();
    let fine = head.append(1, "decision", serde_json::json!({})).unwrap();
    sink.append(&fine).unwrap();
    let bad = head.append(1, "bad\0kind", serde_json::json!({})).unwrap();
    sink.append(&bad).unwrap();
    assert!(sink.records(0, 10).is_err(), "the read-back writes them");
    assert!(sink.commit().is_err());
    assert_eq!(s.audit_head().await.unwrap(), ChainHead::genesis());
    // The same, found only at the commit.
    let mut head = sink.begin().unwrap();
    sink.append(&head.append(1, "decision", serde_json::json!({})).unwrap())
        .unwrap();
    sink.append(&head.append(1, "bad\0kind", serde_json::json!({})).unwrap())
        .unwrap();
    assert!(sink.commit().is_err());
    assert_eq!(s.audit_head().await.unwrap(), ChainHead::genesis());
    let mut head = sink.begin().unwrap();
    assert_eq!(head, ChainHead::genesis());
    sink.append(&head.append(1, "decision", serde_json::json!({})).unwrap())
        .unwrap();
    sink.commit().unwrap();
    assert_eq!(s.audit_head().await.unwrap(), head);
}

/// Approvers on two nodes decide one request at once: exactly one
/// decision, one grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_nodes_decide_an_approval_once() {
    use mandate_core::GrantScope;
    use mandate_store::{ApprovalError, NewApproval, NewGrant, Resolution};
    let (_db, a, b) = two_nodes().await;
    seed(a.as_ref()).await;
    let (id, token) = new_mission(a.as_ref(), "alice", "bot-a").await;
    start(a.as_ref(), &token).await;
    let approval = NewApproval {
        id: "apr_x".into(),
        mission: id.clone(),
        request_digest: "d".into(),
        action: "refund".into(),
        resource: "{}".into(),
        context: "{}".into(),
        context_digest: "c".into(),
        reason_code: "escalation".into(),
        policies: "[]".into(),
        justification: String::new(),
        summary: "refund".into(),
        approvers: Vec::new(),
        step_up: false,
        created_at: T0,
        expires_at: T0.plus(600),
        taint: None,
    };
    a.open_approval(&approval, 10).await.unwrap();
    let mut racers = Vec::new();
    for n in 0..8 {
        let s = if n % 2 == 0 { a.clone() } else { b.clone() };
        let r = Resolution::Approve(NewGrant {
            id: format!("grt_{n}"),
            scope: GrantScope::Once,
            policy: String::new(),
            request_digest: Some("d".into()),
            max_uses: Some(1),
            expires_at: None,
        });
        racers.push(tokio::spawn(async move {
            s.resolve_approval("apr_x", "alice", "ok", &r, T0.plus(2))
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => won += 1,
            Err(ApprovalError::AlreadyDecided(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(b.live_grants(&id, T0.plus(2)).await.unwrap().len(), 1);
}

/// A varied log: decisions and other kinds over a few missions, principals,
/// agents and actions, with times that go back now and then (another
/// node's clock), fields missing, and fields that are not strings.
fn varied_log(n: u64) -> Vec<mandate_core::AuditRecord> {
    let mut head = mandate_core::ChainHead::genesis();
    let pick =
        |i: u64, k: u64, xs: &[&'static str]| xs[((i * k + i / 7) % xs.len() as u64) as usize];
    (0..n)
        .map(|i| {
            let kind = pick(
                i,
                3,
                &[
                    "decision",
                    "decision",
                    "decision",
                    "mission.created",
                    "credential.issued",
                    "approval.requested",
                    "revocation",
                ],
            );
            let mut body = serde_json::json!({
                "mission": pick(i, 5, &["msn_a", "msn_b", "msn_c"]),
                "principal": pick(i, 11, &["alice", "bob"]),
                "agent": pick(i, 13, &["billing-bot", "ops-bot", "x"]),
                "action": pick(i, 17, &["read", "write", "refund", "-"]),
                "n": i,
            });
            let o = body.as_object_mut().unwrap();
            if kind == "decision" {
                o.insert(
                    "decision".into(),
                    pick(i, 19, &["allow", "deny", "escalate"]).into(),
                );
            }
            match i % 23 {
                0 => {
                    o.remove("mission");
                }
                1 => {
                    o.insert(
                        "agent".into(),
                        serde_json::json!({ "agent": "billing-bot" }),
                    );
                }
                2 => {
                    o.insert("decision".into(), serde_json::json!(null));
                }
                3 => {
                    o.insert("action".into(), serde_json::json!(["read"]));
                }
                4 => {
                    o.remove("principal");
                    o.insert(
                        "resource".into(),
                        serde_json::json!({ "mission": "msn_a", "principal": "alice" }),
                    );
                }
                _ => {}
            }
            let time = 1_700_000_000 + i - if i % 10 == 9 { 5 } else { 0 };
            head.append(time, kind, body).unwrap()
        })
        .collect()
}

/// Appends `records` through the store's own audit sink, in groups.
fn append_all(s: &dyn Store, records: &[mandate_core::AuditRecord]) {
    let mut sink = s.audit_sink().unwrap();
    for group in records.chunks(50) {
        sink.begin().unwrap();
        for r in group {
            sink.append(r).unwrap();
        }
        sink.commit().unwrap();
    }
}

/// Filters worth asking: each field alone, the pairs operators use, and
/// values that match nothing.
fn filters() -> Vec<mandate_store::AuditFilter> {
    use mandate_store::AuditFilter;
    let t = |v: &str| Some(v.to_owned());
    let mut out = vec![AuditFilter::default()];
    for m in ["msn_a", "msn_c", "msn_none"] {
        out.push(AuditFilter {
            mission: t(m),
            ..Default::default()
        });
        out.push(AuditFilter {
            mission: t(m),
            decision: t("deny"),
            ..Default::default()
        });
    }
    for k in ["decision", "revocation", "approval.requested", "nothing"] {
        out.push(AuditFilter {
            kind: t(k),
            ..Default::default()
        });
    }
    for d in ["allow", "deny", "escalate"] {
        out.push(AuditFilter {
            decision: t(d),
            ..Default::default()
        });
    }
    for p in ["alice", "bob"] {
        out.push(AuditFilter {
            principal: t(p),
            ..Default::default()
        });
    }
    for (a, act) in [("billing-bot", "refund"), ("ops-bot", "read"), ("x", "-")] {
        out.push(AuditFilter {
            agent: t(a),
            ..Default::default()
        });
        out.push(AuditFilter {
            action: t(act),
            ..Default::default()
        });
        out.push(AuditFilter {
            agent: t(a),
            action: t(act),
            ..Default::default()
        });
    }
    out.push(AuditFilter {
        since: Some(1_700_000_100),
        until: Some(1_700_000_180),
        ..Default::default()
    });
    out.push(AuditFilter {
        since: Some(1_700_000_250),
        ..Default::default()
    });
    out.push(AuditFilter {
        until: Some(1_700_000_020),
        decision: t("allow"),
        ..Default::default()
    });
    out.push(AuditFilter {
        kind: t("decision"),
        mission: t("msn_b"),
        principal: t("alice"),
        agent: t("ops-bot"),
        action: t("write"),
        decision: t("escalate"),
        since: Some(1_700_000_010),
        until: Some(1_700_000_290),
    });
    out
}

/// Every filter, read a page at a time through `audit_query`, against
/// what the old scan (`AuditFilter::matches` over every record) returns.
async fn assert_queries_match_scan(s: &dyn Store, records: &[mandate_core::AuditRecord]) {
    for f in filters() {
        let want: Vec<u64> = records
            .iter()
            .filter(|r| f.matches(r))
            .map(|r| r.seq)
            .collect();
        let all: Vec<u64> = s
            .audit_query(&f, AuditPage::After(0), 10_000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(all, want, "{f:?}");
        // Paged by 7 from `after`, as `/v1/audit` pages.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = s.audit_query(&f, AuditPage::After(after), 7).await.unwrap();
            assert!(page.len() <= 7);
            paged.extend(page.iter().map(|r| r.seq));
            match page.last() {
                Some(r) if page.len() == 7 => after = r.seq,
                _ => break,
            }
        }
        assert_eq!(paged, want, "paged: {f:?}");
        // Newest first, paged by 7 from `before`, as the console pages.
        let mut newest = Vec::new();
        let mut before = None;
        loop {
            let page = s
                .audit_query(&f, AuditPage::Before(before), 7)
                .await
                .unwrap();
            assert!(page.len() <= 7);
            newest.extend(page.iter().map(|r| r.seq));
            match page.last() {
                Some(r) if page.len() == 7 => before = Some(r.seq),
                _ => break,
            }
        }
        let mut reversed = want.clone();
        reversed.reverse();
        assert_eq!(newest, reversed, "newest first: {f:?}");
        // From the middle of the log, both ways.
        let mid: Vec<u64> = want.iter().copied().filter(|&q| q > 150).take(5).collect();
        let got: Vec<u64> = s
            .audit_query(&f, AuditPage::After(150), 5)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(got, mid, "after 150: {f:?}");
        let older: Vec<u64> = reversed
            .iter()
            .copied()
            .filter(|&q| q < 150)
            .take(5)
            .collect();
        let got: Vec<u64> = s
            .audit_query(&f, AuditPage::Before(Some(150)), 5)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(got, older, "before 150: {f:?}");
    }
    // The records come back whole, as stored.
    let f = mandate_store::AuditFilter {
        mission: Some("msn_a".into()),
        ..Default::default()
    };
    let got = s.audit_query(&f, AuditPage::After(0), 3).await.unwrap();
    let want: Vec<_> = records
        .iter()
        .filter(|r| f.matches(r))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(got, want);
}

async fn audit_filters_answer_what_a_scan_of_the_log_answers(db: Db) {
    let s = db.store();
    let records = varied_log(300);
    append_all(s.as_ref(), &records);
    assert_queries_match_scan(s.as_ref(), &records).await;
    assert_eq!(s.audit_columns_mismatch(u64::MAX).await.unwrap(), None);
}

async fn a_filter_column_changed_behind_the_log_is_found(db: Db) {
    let s = db.store();
    let records = varied_log(300);
    append_all(s.as_ref(), &records);
    assert_eq!(s.audit_columns_mismatch(u64::MAX).await.unwrap(), None);
    // Moved to another mission (the record would vanish from its own).
    db.exec(
        "UPDATE audit_events SET mission = 'msn_z' WHERE seq = 42",
        &[],
    )
    .await;
    assert_eq!(s.audit_columns_mismatch(u64::MAX).await.unwrap(), Some(42));
    assert_eq!(s.audit_columns_mismatch(41).await.unwrap(), None);
    db.exec(
        "UPDATE audit_events SET mission = $1 WHERE seq = 42",
        &[records[41].body["mission"].as_str().unwrap()],
    )
    .await;
    assert_eq!(s.audit_columns_mismatch(u64::MAX).await.unwrap(), None);
    // Cleared, and set where the body has none.
    let decided = records
        .iter()
        .find(|r| r.seq > 100 && r.body.get("decision").and_then(|v| v.as_str()).is_some())
        .unwrap()
        .seq;
    db.exec(
        &format!("UPDATE audit_events SET decision = NULL WHERE seq = {decided}"),
        &[],
    )
    .await;
    assert_eq!(
        s.audit_columns_mismatch(u64::MAX).await.unwrap(),
        Some(decided)
    );
    db.exec(
        &format!("UPDATE audit_events SET decision = $1 WHERE seq = {decided}"),
        &[
            records[usize::try_from(decided).unwrap() - 1].body["decision"]
                .as_str()
                .unwrap(),
        ],
    )
    .await;
    assert_eq!(records[0].body.get("mission"), None);
    db.exec(
        "UPDATE audit_events SET mission = 'msn_a' WHERE seq = 1",
        &[],
    )
    .await;
    assert_eq!(s.audit_columns_mismatch(u64::MAX).await.unwrap(), Some(1));
}

async fn audit_find_within_a_mission_finds_what_the_whole_log_finds(db: Db) {
    let s = db.store();
    let records = varied_log(300);
    append_all(s.as_ref(), &records);
    for (kind, field) in [
        ("mission.created", "mission"),
        ("credential.issued", "n"),
        ("approval.requested", "agent"),
        ("revocation", "principal"),
    ] {
        for r in records.iter().filter(|r| r.kind == kind) {
            let Some(value) = r.body.get(field).and_then(|v| v.as_str()) else {
                continue;
            };
            let mission = r.body.get("mission").and_then(|v| v.as_str());
            let anywhere = s.audit_find(kind, None, field, value).await.unwrap();
            let within = s.audit_find(kind, mission, field, value).await.unwrap();
            let first = records.iter().find(|x| {
                x.kind == kind
                    && x.body.get(field).and_then(|v| v.as_str()) == Some(value)
                    && mission
                        .is_none_or(|m| x.body.get("mission").and_then(|v| v.as_str()) == Some(m))
            });
            assert_eq!(
                within.as_ref(),
                first,
                "{kind} {field}={value} in {mission:?}"
            );
            assert!(anywhere.is_some_and(|a| a.seq <= r.seq));
        }
    }
    assert!(
        s.audit_find("mission.created", Some("msn_none"), "mission", "msn_a")
            .await
            .unwrap()
            .is_none()
    );
}

async fn migration_0008_fills_the_columns_of_a_log_written_before_it(mut db: Db) {
    let records = varied_log(300);
    append_all(db.store().as_ref(), &records);
    // Back to the schema before 0008: no columns, no indexes, the
    // migration not applied.
    for index in [
        "kind",
        "mission",
        "principal",
        "agent",
        "action",
        "agent_action",
        "decision",
        "related",
    ] {
        db.exec(&format!("DROP INDEX audit_events_{index}"), &[])
            .await;
    }
    for column in ["mission", "principal", "agent", "action", "decision"] {
        db.exec(
            &format!("ALTER TABLE audit_events DROP COLUMN {column}"),
            &[],
        )
        .await;
    }
    assert_eq!(
        db.exec("DELETE FROM _sqlx_migrations WHERE version = 8", &[])
            .await,
        1
    );
    // A tampered body that is not JSON: the migration leaves it NULL
    // rather than failing the start (verification reports it).
    db.exec(
        "UPDATE audit_events SET body = '{not json' WHERE seq = 299",
        &[],
    )
    .await;
    db.reopen().await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 8")
            .await,
        1
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM audit_events WHERE seq = 299 AND mission IS NULL")
            .await,
        1
    );
    // What a scan saw before: the tampered body read back as a string,
    // matching no field.
    let mut records = records;
    records[298].body = serde_json::Value::String("{not json".into());
    let s = db.store();
    let stored = s.audit_records(0, 1_000).await.unwrap();
    assert_eq!(stored, records);
    assert_queries_match_scan(s.as_ref(), &records).await;
    // And the sink goes on filling them after the migration.
    let mut head = s.audit_head().await.unwrap();
    let more = vec![
        head.append(
            1_800_000_000,
            "decision",
            serde_json::json!({ "mission": "msn_a", "decision": "deny" }),
        )
        .unwrap(),
    ];
    append_all(s.as_ref(), &more);
    let f = mandate_store::AuditFilter {
        mission: Some("msn_a".into()),
        decision: Some("deny".into()),
        ..Default::default()
    };
    assert_eq!(
        s.audit_query(&f, AuditPage::After(300), 10).await.unwrap(),
        more
    );
}

// --- delegation ---

/// Alice's agents for chains (an agent acts at most once in a chain).
async fn seed_chain(s: &dyn Store) {
    seed(s).await;
    for agent in ["bot-c", "bot-d"] {
        s.create_agent(&Agent {
            name: agent.parse().unwrap(),
            owner: "alice".parse().unwrap(),
            description: String::new(),
            created_at: T0,
            revoked_at: None,
            attestation: None,
        })
        .await
        .unwrap();
    }
}

/// Starts a ready mission at `T0 + 1` with a new key.
async fn start(s: &dyn Store, token: &SecretToken) -> MissionKey {
    let key = MissionKey::generate(&OsRandom).unwrap();
    s.start_mission(&token.hash(), key.thumbprint(), T0.plus(1))
        .await
        .unwrap();
    key
}

/// A principal's mission for alice's `bot-a`, started: its id and key.
async fn running_root(s: &dyn Store) -> (MissionId, MissionKey) {
    let (id, token) = new_mission(s, "alice", "bot-a").await;
    (id, start(s, &token).await)
}

/// A child delegation of `parent` (as stored) to `agent`, at `T0 + 2`:
/// the parent's key proves it. Built as the authority builds it, except
/// that what the parent has left is not checked here (the store must).
async fn child_of(
    s: &dyn Store,
    parent: &MissionId,
    parent_key: &MissionKey,
    agent: &str,
    budget: u64,
    ttl_secs: u64,
) -> (NewDelegation, SecretToken) {
    let parent = s.mission(parent).await.unwrap().unwrap();
    let id = MissionId::generate(&OsRandom).unwrap();
    let agent: AgentName = if agent.contains('@') {
        AgentName::ephemeral(agent.trim_end_matches('@'), &id).unwrap()
    } else {
        agent.parse().unwrap()
    };
    let body = MissionBody::delegated(
        ChildSpec {
            ephemeral: agent.is_ephemeral(),
            spec: MissionSpec {
                agent,
                goal: "check one invoice".into(),
                policies: MissionPolicies::default(),
                ttl_secs,
                budget,
                out_of_scope: OutOfScope::Escalate,
            },
        },
        id,
        &parent,
        &[],
        u64::MAX,
        T0.plus(2),
        MissionLimits::default(),
        None,
    )
    .unwrap();
    let token = SecretToken::generate(TokenKind::Start, &OsRandom).unwrap();
    let s256 = mission_s256(&body).unwrap();
    let d = NewDelegation {
        mission: NewMission {
            body,
            s256,
            start_token: token.hash(),
            start_token_expires_at: T0.plus(600),
        },
        parent_jkt: parent_key.thumbprint().clone(),
        parent_budget: parent.body.budget.requests,
        link: format!("link-to-{}", parent.body.id),
        now: T0.plus(2),
    };
    (d, token)
}

/// Delegates `budget` of `parent` to `agent` (`label@` for an ephemeral
/// sub-agent) and starts the child: its id and key.
async fn running_child(
    s: &dyn Store,
    parent: &MissionId,
    parent_key: &MissionKey,
    agent: &str,
    budget: u64,
) -> (MissionId, MissionKey) {
    let (d, token) = child_of(s, parent, parent_key, agent, budget, 600).await;
    s.delegate(&d).await.unwrap();
    (d.mission.body.id.clone(), start(s, &token).await)
}

async fn ended_as(s: &dyn Store, id: &MissionId) -> Option<EndReason> {
    match s.mission(id).await.unwrap().unwrap().status {
        MissionStatus::Ended { reason, .. } => Some(reason),
        _ => None,
    }
}

async fn a_delegated_child_is_stored_under_its_running_parent(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (d, token) = child_of(s.as_ref(), &root, &root_key, "bot-c", 4, 600).await;
    s.delegate(&d).await.unwrap();
    let child = d.mission.body.id.clone();

    let stored = s.mission(&child).await.unwrap().unwrap();
    assert_eq!(stored.status, MissionStatus::Ready);
    assert_eq!(stored.body.parent().unwrap().id, root);
    assert_eq!(stored.s256, d.mission.s256);
    assert_eq!(
        s.delegation_link(&child).await.unwrap().as_deref(),
        Some(d.link.as_str())
    );
    assert_eq!(s.delegation_link(&root).await.unwrap(), None);
    // The child's budget is carved out of the parent's.
    assert_eq!(s.budget_used(&root).await.unwrap(), 4);
    assert_eq!(s.budget_used(&child).await.unwrap(), 0);

    // The child delegates in turn, once started with its own start token.
    let child_key = start(s.as_ref(), &token).await;
    let (grandchild, _) = running_child(s.as_ref(), &child, &child_key, "bot-d", 2).await;
    assert_eq!(s.budget_used(&child).await.unwrap(), 2);
    assert_eq!(s.budget_used(&root).await.unwrap(), 4);
    // A mission of its own beside the chain is not part of it.
    new_mission(s.as_ref(), "alice", "bot-a").await;

    let tree: Vec<MissionId> = s
        .mission_tree(&root)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body.id)
        .collect();
    assert_eq!(tree, vec![root.clone(), child.clone(), grandchild.clone()]);
    let below: Vec<MissionId> = s
        .mission_tree(&child)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body.id)
        .collect();
    assert_eq!(below, vec![child, grandchild]);
    let unknown = MissionId::generate(&OsRandom).unwrap();
    assert!(s.mission_tree(&unknown).await.unwrap().is_empty());
}

async fn a_refused_delegation_changes_nothing(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    // Three of the parent's ten are taken already.
    running_child(s.as_ref(), &root, &root_key, "bot-d", 3).await;
    let unchanged = |d: NewDelegation| {
        let s = s.clone();
        let root = root.clone();
        async move {
            let child = d.mission.body.id.clone();
            assert_eq!(s.budget_used(&root).await.unwrap(), 3);
            assert!(s.mission(&child).await.unwrap().is_none());
            assert!(s.delegation_link(&child).await.unwrap().is_none());
            assert_eq!(s.mission_tree(&root).await.unwrap().len(), 2);
        }
    };

    // More than the parent has left: how much is left is said.
    let (d, _) = child_of(s.as_ref(), &root, &root_key, "bot-c", 8, 600).await;
    match s.delegate(&d).await {
        Err(DelegateError::BudgetWidens { left: 7, asked: 8 }) => {}
        other => panic!("expected BudgetWidens {{ left: 7, asked: 8 }}, got {other:?}"),
    }
    unchanged(d).await;

    // Proved with a key the parent is not bound to.
    let stranger = MissionKey::generate(&OsRandom).unwrap();
    let (mut d, _) = child_of(s.as_ref(), &root, &root_key, "bot-c", 1, 600).await;
    d.parent_jkt = stranger.thumbprint().clone();
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::KeyMismatch)
    ));
    unchanged(d).await;

    // Another principal's agent; an ephemeral sub-agent already recorded
    // for another mission; a revoked agent; a registered name recorded as
    // an ephemeral sub-agent's.
    let (d, _) = child_of(s.as_ref(), &root, &root_key, "bot-b", 1, 600).await;
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::NoSuchAgent(a)) if a == "bot-b"
    ));
    unchanged(d).await;
    let (first, _) = child_of(s.as_ref(), &root, &root_key, "helper@", 1, 600).await;
    s.delegate(&first).await.unwrap();
    let (mut d, _) = child_of(s.as_ref(), &root, &root_key, "bot-c", 1, 600).await;
    d.mission.body.agent = first.mission.body.agent.clone();
    d.mission.s256 = mission_s256(&d.mission.body).unwrap();
    let before = s.agent(&first.mission.body.agent).await.unwrap();
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::Store(StoreError::Conflict(_)))
    ));
    assert_eq!(s.agent(&first.mission.body.agent).await.unwrap(), before);
    assert!(s.mission(&d.mission.body.id).await.unwrap().is_none());
    assert_eq!(s.budget_used(&root).await.unwrap(), 4);
    s.revoke(&Revocation {
        kind: RevocationKind::Agent,
        target: "bot-c".into(),
        reason: "retired".into(),
        revoked_by: "alice".parse().unwrap(),
        at: T0.plus(2),
    })
    .await
    .unwrap();
    let (d, _) = child_of(s.as_ref(), &root, &root_key, "bot-c", 1, 600).await;
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::NoSuchAgent(a)) if a == "bot-c"
    ));
    assert_eq!(s.budget_used(&root).await.unwrap(), 4);
    assert!(s.mission(&d.mission.body.id).await.unwrap().is_none());
    db.exec(
        "UPDATE agents SET ephemeral_of = $1 WHERE name = 'bot-d'",
        &[first.mission.body.id.as_str()],
    )
    .await;
    let (d, _) = child_of(s.as_ref(), &root, &root_key, "bot-d", 1, 600).await;
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::NoSuchAgent(a)) if a == "bot-d"
    ));
    assert_eq!(s.budget_used(&root).await.unwrap(), 4);
    assert!(s.mission(&d.mission.body.id).await.unwrap().is_none());

    // A parent that has not started, or has ended, delegates nothing.
    let (ready, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let (mut d, _) = child_of(s.as_ref(), &root, &root_key, "helper@", 1, 600).await;
    let ready_body = s.mission(&ready).await.unwrap().unwrap();
    d.mission.body.ancestors = vec![MissionRef {
        id: ready.clone(),
        s256: ready_body.s256,
    }];
    d.mission.s256 = mission_s256(&d.mission.body).unwrap();
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::ParentNotActive)
    ));
    assert_eq!(s.budget_used(&ready).await.unwrap(), 0);
    assert!(s.mission(&d.mission.body.id).await.unwrap().is_none());
    assert!(s.agent(&d.mission.body.agent).await.unwrap().is_none());
    s.end_mission(&root, EndReason::Completed, "alice", T0.plus(3))
        .await
        .unwrap();
    let (d, _) = child_of(s.as_ref(), &root, &root_key, "helper@", 1, 600).await;
    assert!(matches!(
        s.delegate(&d).await,
        Err(DelegateError::ParentNotActive)
    ));
    assert_eq!(s.budget_used(&root).await.unwrap(), 4);
    assert!(s.mission(&d.mission.body.id).await.unwrap().is_none());
    assert!(s.agent(&d.mission.body.agent).await.unwrap().is_none());
}

async fn racing_delegations_take_no_more_than_the_parent_has(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    // The parent's budget is 10: three children of 3 fit, a fourth does not.
    let (root, root_key) = running_root(s.as_ref()).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (d, _) = child_of(s.as_ref(), &root, &root_key, "bot-c", 3, 600).await;
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.delegate(&d).await }));
    }
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => stored += 1,
            Err(DelegateError::BudgetWidens { left: 1, asked: 3 }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(stored, 3);
    assert_eq!(s.budget_used(&root).await.unwrap(), 9);
    assert_eq!(s.mission_tree(&root).await.unwrap().len(), 4);
}

async fn ending_a_mission_ends_every_mission_below_it(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (child, child_key) = running_child(s.as_ref(), &root, &root_key, "bot-c", 4).await;
    let (grandchild, _) = running_child(s.as_ref(), &child, &child_key, "bot-d", 2).await;
    // A child whose TTL ran out before its root ended: recorded as expired,
    // at its expiry.
    let (d, _) = child_of(s.as_ref(), &root, &root_key, "helper@", 1, 60).await;
    s.delegate(&d).await.unwrap();
    let short = d.mission.body.id.clone();
    let at = T0.plus(100);

    let ended = s
        .end_mission(&root, EndReason::Completed, "alice", at)
        .await
        .unwrap();
    assert_eq!(ended.state_at(at).0, MissionState::Ended);
    for id in [&child, &grandchild] {
        let m = s.mission(id).await.unwrap().unwrap();
        assert_eq!(
            m.state_at(at),
            (MissionState::Ended, Some((EndReason::Completed, at)))
        );
    }
    let m = s.mission(&short).await.unwrap().unwrap();
    assert_eq!(
        m.state_at(at),
        (MissionState::Ended, Some((EndReason::Expired, T0.plus(62))))
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM missions WHERE ended_by = 'ancestor {root} ended'"
        ))
        .await,
        3
    );
    // Below a revoked mission, they are revoked.
    let (other, other_key) = running_root(s.as_ref()).await;
    let (under, _) = running_child(s.as_ref(), &other, &other_key, "bot-c", 1).await;
    s.end_mission(&other, EndReason::Revoked, "alice", at)
        .await
        .unwrap();
    assert_eq!(ended_as(s.as_ref(), &under).await, Some(EndReason::Revoked));
}

async fn revoking_a_mission_or_agent_ends_the_missions_below_theirs(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (middle, middle_key) = running_child(s.as_ref(), &root, &root_key, "bot-c", 4).await;
    let (below, _) = running_child(s.as_ref(), &middle, &middle_key, "bot-d", 2).await;
    let (sibling, _) = running_child(s.as_ref(), &root, &root_key, "helper@", 1).await;

    let summary = s
        .revoke(&Revocation {
            kind: RevocationKind::Mission,
            target: middle.to_string(),
            reason: "went astray".into(),
            revoked_by: "alice".parse().unwrap(),
            at: T0.plus(10),
        })
        .await
        .unwrap();
    let mut expected = vec![middle.clone(), below.clone()];
    expected.sort();
    assert_eq!(summary.missions, expected);
    for id in [&middle, &below] {
        assert_eq!(ended_as(s.as_ref(), id).await, Some(EndReason::Revoked));
    }
    for id in [&root, &sibling] {
        assert_eq!(ended_as(s.as_ref(), id).await, None);
    }

    // Revoking an agent ends its missions and every mission below them.
    let (middle, middle_key) = running_child(s.as_ref(), &root, &root_key, "bot-c", 2).await;
    let (below, below_key) = running_child(s.as_ref(), &middle, &middle_key, "bot-d", 1).await;
    let (deepest, _) = running_child(s.as_ref(), &below, &below_key, "helper@", 1).await;
    let summary = s
        .revoke(&Revocation {
            kind: RevocationKind::Agent,
            target: "bot-c".into(),
            reason: "compromised".into(),
            revoked_by: "alice".parse().unwrap(),
            at: T0.plus(20),
        })
        .await
        .unwrap();
    let mut expected = vec![middle.clone(), below.clone(), deepest.clone()];
    expected.sort();
    assert_eq!(summary.missions, expected);
    for id in [&middle, &below, &deepest] {
        assert_eq!(ended_as(s.as_ref(), id).await, Some(EndReason::Revoked));
    }
    for id in [&root, &sibling] {
        assert_eq!(ended_as(s.as_ref(), id).await, None);
    }
}

async fn an_ephemeral_sub_agent_exists_for_its_one_mission(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (child, _) = running_child(s.as_ref(), &root, &root_key, "summarizer@", 2).await;
    let name = s.mission(&child).await.unwrap().unwrap().body.agent;
    assert!(name.is_ephemeral());

    let found = s.agent(&name).await.unwrap().unwrap();
    assert_eq!(found.owner.as_str(), "alice");
    assert_eq!(
        found.description,
        format!("ephemeral sub-agent of mission {root}")
    );
    // Not among the registered agents.
    for owner in [None, Some(&"alice".parse().unwrap())] {
        let listed = s.agents(owner).await.unwrap();
        assert!(listed.iter().all(|a| a.name != name));
        assert!(listed.iter().any(|a| a.name.as_str() == "bot-c"));
    }
    // No other mission can be created for it.
    let id = MissionId::generate(&OsRandom).unwrap();
    let body = MissionBody::new(
        MissionSpec {
            agent: name.clone(),
            goal: "anything else".into(),
            policies: MissionPolicies::default(),
            ttl_secs: 3_600,
            budget: 10,
            out_of_scope: OutOfScope::Escalate,
        },
        id.clone(),
        "http://issuer.test",
        "alice".parse().unwrap(),
        T0,
        MissionLimits::default(),
        None,
    )
    .unwrap();
    let token = SecretToken::generate(TokenKind::Start, &OsRandom).unwrap();
    let s256 = mission_s256(&body).unwrap();
    assert!(matches!(
        s.create_mission(&NewMission {
            body,
            s256,
            start_token: token.hash(),
            start_token_expires_at: T0.plus(600),
        })
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.mission(&id).await.unwrap().is_none());
}

async fn a_denial_that_ends_a_mission_ends_the_missions_below_it(db: Db) {
    use mandate_store::{NewApproval, Resolution};
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (child, _) = running_child(s.as_ref(), &root, &root_key, "bot-c", 2).await;
    s.open_approval(
        &NewApproval {
            id: "apr_root".into(),
            mission: root.clone(),
            request_digest: "d".into(),
            action: "refund".into(),
            resource: "{}".into(),
            context: "{}".into(),
            context_digest: "c".into(),
            reason_code: "escalation".into(),
            policies: "[]".into(),
            justification: "because".into(),
            summary: "refund".into(),
            approvers: vec![],
            step_up: false,
            created_at: T0.plus(2),
            expires_at: T0.plus(600),
            taint: None,
        },
        10,
    )
    .await
    .unwrap();
    s.resolve_approval(
        "apr_root",
        "alice",
        "no",
        &Resolution::Deny { end_mission: true },
        T0.plus(3),
    )
    .await
    .unwrap();
    assert_eq!(ended_as(s.as_ref(), &root).await, Some(EndReason::Revoked));
    assert_eq!(ended_as(s.as_ref(), &child).await, Some(EndReason::Revoked));
}

both!(a_missions_taint_only_grows_until_cleared);

/// A mission's taint gains labels (the first source of each kept), never
/// loses them on its own, survives racing marks, and goes only when
/// cleared.
async fn a_missions_taint_only_grows_until_cleared(db: Db) {
    let s = db.store();
    seed(s.as_ref()).await;
    let (id, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    let cal = vec!["calendar".to_owned()];
    let t = s
        .mark_taint(&id, &cal, "route calendar GET /e/1", T0.plus(1))
        .await
        .unwrap()
        .expect("a new label is written");
    assert_eq!(t.since, T0.plus(1).0);
    assert!(
        s.mark_taint(&id, &cal, "route calendar GET /e/2", T0.plus(2))
            .await
            .unwrap()
            .is_none(),
        "a label it has already is not written again"
    );
    // Two answers of new kinds at once: both labels land.
    let (web, email) = (vec!["web".to_owned()], vec!["email".to_owned()]);
    let (a, b) = tokio::join!(
        s.mark_taint(&id, &web, "mcp web tools/call fetch", T0.plus(3)),
        s.mark_taint(&id, &email, "route mail GET /inbox", T0.plus(3)),
    );
    a.unwrap();
    b.unwrap();
    let m = s.mission(&id).await.unwrap().unwrap();
    let taint = m.taint.expect("tainted");
    assert_eq!(
        taint.labels.iter().map(String::as_str).collect::<Vec<_>>(),
        ["calendar", "email", "web"]
    );
    assert_eq!(taint.since, T0.plus(1).0);
    assert_eq!(taint.sources[0].via, "route calendar GET /e/1");
    assert_eq!(s.clear_taint(&id).await.unwrap(), Some(taint));
    assert!(s.mission(&id).await.unwrap().unwrap().taint.is_none());
    let unknown = MissionId::generate(&OsRandom).unwrap();
    assert!(matches!(
        s.mark_taint(&unknown, &cal, "x", T0).await,
        Err(StoreError::NotFound(_))
    ));
}

// --- mission memory and agent notes ---

#[path = "store/memory.rs"]
mod memory;

both!(console_passkeys_links_and_sessions);

/// The console's records (ADR 0032): passkeys are unique across
/// principals and go with a revoked principal; an enrollment link works
/// once and not after its expiry; a session is found by its hash until it
/// is deleted or swept.
async fn console_passkeys_links_and_sessions(db: Db) {
    use mandate_store::{ConsoleSession, StoredPasskey};
    let s = db.store();
    seed(s.as_ref()).await;
    let alice: mandate_core::PrincipalName = "alice".parse().unwrap();
    let key = |id: &str, who: &str| StoredPasskey {
        cred_id: id.into(),
        principal: who.parse().unwrap(),
        passkey: format!("{{\"k\":\"{id}\"}}"),
        created_at: T0,
    };
    s.add_passkey(&key("c1", "alice")).await.unwrap();
    s.add_passkey(&key("c2", "alice")).await.unwrap();
    assert!(matches!(
        s.add_passkey(&key("c1", "bob")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_passkey(&key("c3", "nobody")).await,
        Err(StoreError::NotFound(_))
    ));
    let mine = s.passkeys(&alice).await.unwrap();
    assert_eq!(
        mine.iter().map(|k| k.cred_id.as_str()).collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    s.update_passkey("c1", "{\"k\":\"moved\"}").await.unwrap();
    assert_eq!(
        s.passkey("c1").await.unwrap().unwrap().passkey,
        "{\"k\":\"moved\"}"
    );
    assert!(
        s.passkeys(&"bob".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // Enrollment links: once, and not after expiry.
    s.add_enrollment("h1", &alice, T0.plus(900)).await.unwrap();
    s.add_enrollment("h2", &alice, T0.plus(900)).await.unwrap();
    assert_eq!(
        s.take_enrollment("h1", T0).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(s.take_enrollment("h1", T0).await.unwrap(), None);
    assert_eq!(s.take_enrollment("h2", T0.plus(900)).await.unwrap(), None);
    assert_eq!(
        s.take_enrollment("h2", T0).await.unwrap(),
        None,
        "spent by the late try"
    );
    assert!(matches!(
        s.add_enrollment("h3", &"nobody".parse().unwrap(), T0.plus(900))
            .await,
        Err(StoreError::NotFound(_))
    ));

    // Sessions.
    let session = ConsoleSession {
        principal: alice.clone(),
        csrf: "csrf".into(),
        created_at: T0,
        last_seen: T0,
    };
    s.add_console_session("s1", &session).await.unwrap();
    s.add_console_session("s2", &session).await.unwrap();
    assert_eq!(
        s.console_session("s1").await.unwrap(),
        Some(session.clone())
    );
    s.touch_console_session("s1", T0.plus(60)).await.unwrap();
    assert_eq!(
        s.console_session("s1").await.unwrap().unwrap().last_seen,
        T0.plus(60)
    );
    s.delete_console_session("s2").await.unwrap();
    assert_eq!(s.console_session("s2").await.unwrap(), None);
    // Idle since before T0 + 30: s1 (last seen at T0 + 60) stays.
    s.sweep_console(UnixTime(0), T0.plus(30), T0).await.unwrap();
    assert!(s.console_session("s1").await.unwrap().is_some());
    s.sweep_console(UnixTime(0), T0.plus(61), T0).await.unwrap();
    assert_eq!(s.console_session("s1").await.unwrap(), None);
}

/// What the console's agents page shows: per agent, its missions not
/// ended and not expired, of one owner's agents or of all.
async fn live_missions_are_counted_per_agent(db: Db) {
    let s = db.store();
    seed(s.as_ref()).await;
    let (first, _) = new_mission(s.as_ref(), "alice", "bot-a").await;
    new_mission(s.as_ref(), "alice", "bot-a").await;
    // bob's mission for alice's agent counts for the agent, so for alice.
    new_mission(s.as_ref(), "bob", "bot-a").await;
    new_mission(s.as_ref(), "bob", "bot-b").await;
    let count = |owner: Option<&str>, at: UnixTime| {
        let s = Arc::clone(&s);
        let owner = owner.map(|o| o.parse::<mandate_core::PrincipalName>().unwrap());
        async move {
            s.live_missions_by_agent(owner.as_ref(), at)
                .await
                .unwrap()
                .into_iter()
                .map(|(a, n)| (a.to_string(), n))
                .collect::<Vec<_>>()
        }
    };
    let now = T0.plus(1);
    assert_eq!(
        count(None, now).await,
        [("bot-a".to_owned(), 3), ("bot-b".to_owned(), 1)]
    );
    assert_eq!(count(Some("alice"), now).await, [("bot-a".to_owned(), 3)]);
    assert_eq!(count(Some("bob"), now).await, [("bot-b".to_owned(), 1)]);
    s.end_mission(&first, mandate_core::EndReason::Completed, "alice", now)
        .await
        .unwrap();
    assert_eq!(count(Some("alice"), now).await, [("bot-a".to_owned(), 2)]);
    // Past their expiry (an hour), none is live, ended or not.
    assert!(count(None, T0.plus(3_600)).await.is_empty());
}
