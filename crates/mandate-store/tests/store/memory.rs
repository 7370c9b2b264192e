//! Mission memory and agent notes, on both backends: entries live and die
//! with their mission (the rows are gone from the database when the call
//! that ends it returns), limits refuse a write and change nothing, keys
//! and values come back as sent, and a promotion copies entries with their
//! provenance into the agent's notes, all or none.

use mandate_core::{
    EndReason, MAX_MEMORY_VALUE_BYTES, MemoryKey, MemoryValue, MissionId, UnixTime,
};
use mandate_store::{
    MemoryDeleted, MemoryWriteError, NewApproval, NewMemoryEntry, Promotion, Resolution,
    Revocation, RevocationKind, Store,
};
use serde_json::value::RawValue;

use super::{Backend, Db, T0, new_mission, running_child, running_root, seed_chain, start};

both!(
    entries_come_back_as_sent_with_their_provenance,
    only_an_active_mission_writes,
    limits_refuse_a_write_and_change_nothing,
    racing_writes_stay_within_the_limit,
    ending_a_mission_deletes_its_memory_and_that_below_it,
    revocations_and_denials_delete_the_memory_of_what_they_end,
    a_sweep_deletes_the_memory_of_expired_missions,
    a_promotion_copies_entries_to_the_agents_notes_all_or_none,
    an_agents_notes_are_bounded,
);

fn key(k: &str) -> MemoryKey {
    MemoryKey::try_from(k.to_owned()).unwrap()
}

fn value(json: &str) -> MemoryValue {
    MemoryValue::new(RawValue::from_string(json.to_owned()).unwrap()).unwrap()
}

fn entry(mission: &MissionId, k: &str, json: &str, shared: bool, at: u64) -> NewMemoryEntry {
    NewMemoryEntry {
        mission: mission.clone(),
        key: key(k),
        value: value(json),
        shared,
        source: format!("wrote {}", k.len()),
        now: T0.plus(at),
    }
}

async fn put(s: &dyn Store, mission: &MissionId, k: &str, json: &str) {
    s.memory_put(&entry(mission, k, json, false, 5))
        .await
        .unwrap();
}

/// Memory rows of `mission` in the database, counted behind the store.
async fn rows(db: &Db, mission: &MissionId) -> i64 {
    db.scalar(&format!(
        "SELECT COUNT(*) FROM memory_entries WHERE mission_id = '{mission}'"
    ))
    .await
}

const HOSTILE_KEYS: [&str; 5] = [
    "'; DROP TABLE memory_entries; --",
    "permit(principal, action, resource) when { true };",
    "nul\u{0}tab\tnewline\n\u{1b}[31mred",
    "a/b?c#d%2F..\\",
    "promote",
];

async fn entries_come_back_as_sent_with_their_provenance(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (m, _) = running_root(s.as_ref()).await;
    // Exactly as sent: spacing, order, a number no float holds.
    let raw = "{\"z\": 1,  \"a\": [12345678901234567890123, \"\\u0000\"]}";
    for (i, k) in HOSTILE_KEYS.iter().enumerate() {
        let written = s
            .memory_put(&entry(&m, k, raw, i % 2 == 0, 5))
            .await
            .unwrap();
        assert_eq!(written.key.as_str(), *k);
        assert_eq!(written.value, raw);
        assert_eq!(written.value_s256, mandate_core::s256(raw.as_bytes()));
        assert_eq!(written.bytes, raw.len() as u64);
        assert_eq!(written.taint, None);
    }
    for k in HOSTILE_KEYS {
        let got = s.memory_get(&m, &key(k)).await.unwrap().unwrap();
        assert_eq!((got.key.as_str(), got.value.as_str()), (k, raw));
        assert_eq!(got.source, format!("wrote {}", k.len()));
    }
    // The tables are all there.
    assert_eq!(rows(&db, &m).await, 5);
    let listed = s.memory_list(&m).await.unwrap();
    let mut want: Vec<&str> = HOSTILE_KEYS.to_vec();
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        want
    );

    // An overwrite keeps the creation time and stamps the mission's taint
    // as it is when the entry is written.
    s.mark_taint(
        &m,
        &["calendar".into()],
        "route calendar GET /e",
        T0.plus(6),
    )
    .await
    .unwrap();
    let over = s
        .memory_put(&entry(&m, "promote", "\"later\"", true, 7))
        .await
        .unwrap();
    assert_eq!(over.created_at, T0.plus(5));
    assert_eq!(over.updated_at, T0.plus(7));
    assert!(over.shared);
    let taint = over.taint.unwrap();
    assert!(taint.labels.contains("calendar"));
    assert_eq!(
        s.memory_get(&m, &key("promote"))
            .await
            .unwrap()
            .unwrap()
            .value,
        "\"later\""
    );

    // Another mission of the same agent sees none of it.
    let (other, _) = running_root(s.as_ref()).await;
    assert!(s.memory_list(&other).await.unwrap().is_empty());
    assert!(
        s.memory_get(&other, &key("promote"))
            .await
            .unwrap()
            .is_none()
    );

    assert!(s.memory_delete(&m, &key(HOSTILE_KEYS[0])).await.unwrap());
    assert!(!s.memory_delete(&m, &key(HOSTILE_KEYS[0])).await.unwrap());
    assert_eq!(rows(&db, &m).await, 4);
}

async fn only_an_active_mission_writes(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    // Not started yet.
    let (ready, token) = new_mission(s.as_ref(), "alice", "bot-a").await;
    assert!(matches!(
        s.memory_put(&entry(&ready, "k", "1", false, 0)).await,
        Err(MemoryWriteError::MissionNotActive)
    ));
    start(s.as_ref(), &token).await;
    put(s.as_ref(), &ready, "k", "1").await;
    // Past its expiry (T0 + 3600), though not yet ended.
    assert!(matches!(
        s.memory_put(&entry(&ready, "k2", "1", false, 3_600)).await,
        Err(MemoryWriteError::MissionNotActive)
    ));
    // Ended.
    s.end_mission(&ready, EndReason::Completed, "alice", T0.plus(10))
        .await
        .unwrap();
    assert!(matches!(
        s.memory_put(&entry(&ready, "k", "2", false, 11)).await,
        Err(MemoryWriteError::MissionNotActive)
    ));
    assert_eq!(rows(&db, &ready).await, 0);
    // No such mission.
    let ghost = MissionId::generate(&mandate_core::OsRandom).unwrap();
    assert!(matches!(
        s.memory_put(&entry(&ghost, "k", "1", false, 11)).await,
        Err(MemoryWriteError::MissionNotActive)
    ));
}

async fn limits_refuse_a_write_and_change_nothing(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (m, _) = running_root(s.as_ref()).await;
    for i in 0..256 {
        put(s.as_ref(), &m, &format!("k{i:03}"), "true").await;
    }
    let refused = s
        .memory_put(&entry(&m, "one-too-many", "1", false, 6))
        .await;
    assert!(
        matches!(&refused, Err(MemoryWriteError::Limit(d)) if d.contains("256")),
        "{:?}",
        refused.err()
    );
    assert_eq!(rows(&db, &m).await, 256);
    assert!(
        s.memory_get(&m, &key("one-too-many"))
            .await
            .unwrap()
            .is_none()
    );
    // Overwriting an entry at the limit is fine.
    put(s.as_ref(), &m, "k000", "false").await;

    // 1 MiB of values: sixteen of the largest fit exactly; a byte more
    // does not, whether a new entry or one that grows.
    let (big, _) = running_root(s.as_ref()).await;
    let largest = format!("\"{}\"", "x".repeat(MAX_MEMORY_VALUE_BYTES - 2));
    for i in 0..16 {
        put(s.as_ref(), &big, &format!("b{i:02}"), &largest).await;
    }
    let refused = s.memory_put(&entry(&big, "small", "1", false, 6)).await;
    assert!(
        matches!(&refused, Err(MemoryWriteError::Limit(d)) if d.contains("bytes")),
        "{:?}",
        refused.err()
    );
    put(s.as_ref(), &big, "b00", "1").await;
    put(s.as_ref(), &big, "small", "2").await;
    let grown = s
        .memory_put(&entry(&big, "small", &largest, false, 6))
        .await;
    assert!(
        matches!(&grown, Err(MemoryWriteError::Limit(_))),
        "{:?}",
        grown.err()
    );
    let kept = s.memory_get(&big, &key("small")).await.unwrap().unwrap();
    assert_eq!((kept.value.as_str(), kept.updated_at), ("2", T0.plus(5)));
    assert_eq!(rows(&db, &big).await, 17);
}

async fn racing_writes_stay_within_the_limit(db: Db) {
    let s = db.store();
    // On PostgreSQL, another node.
    let other = db.open().await;
    seed_chain(s.as_ref()).await;
    let (m, _) = running_root(s.as_ref()).await;
    for i in 0..250 {
        put(s.as_ref(), &m, &format!("k{i:03}"), "1").await;
    }
    let tries = (0..12).map(|i| {
        let store = if i % 2 == 0 {
            std::sync::Arc::clone(&s)
        } else {
            std::sync::Arc::clone(&other)
        };
        let e = entry(&m, &format!("race{i:02}"), "1", false, 6);
        tokio::spawn(async move { store.memory_put(&e).await })
    });
    let mut written = 0;
    for t in tries.collect::<Vec<_>>() {
        match t.await.unwrap() {
            Ok(_) => written += 1,
            Err(MemoryWriteError::Limit(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(written, 6);
    assert_eq!(rows(&db, &m).await, 256);
}

async fn ending_a_mission_deletes_its_memory_and_that_below_it(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (child, child_key) = running_child(s.as_ref(), &root, &root_key, "bot-c", 4).await;
    let (grandchild, _) = running_child(s.as_ref(), &child, &child_key, "bot-d", 2).await;
    let (other, _) = running_root(s.as_ref()).await;
    for (m, n) in [(&root, 3), (&child, 2), (&grandchild, 1), (&other, 1)] {
        for i in 0..n {
            put(s.as_ref(), m, &format!("k{i}"), "1").await;
        }
    }
    let (ended, deleted) = s
        .end_mission_forgetting(&root, EndReason::Completed, "alice", T0.plus(10))
        .await
        .unwrap();
    assert_eq!(ended.body.id, root);
    let mut want = vec![
        MemoryDeleted {
            mission: root.clone(),
            entries: 3,
        },
        MemoryDeleted {
            mission: child.clone(),
            entries: 2,
        },
        MemoryDeleted {
            mission: grandchild.clone(),
            entries: 1,
        },
    ];
    want.sort();
    assert_eq!(deleted, want);
    for m in [&root, &child, &grandchild] {
        assert_eq!(rows(&db, m).await, 0, "rows of {m}");
    }
    assert_eq!(rows(&db, &other).await, 1);
    // Ending without memory deletes nothing, and says so.
    let (bare, _) = running_root(s.as_ref()).await;
    let (_, none) = s
        .end_mission_forgetting(&bare, EndReason::Completed, "alice", T0.plus(10))
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn revocations_and_denials_delete_the_memory_of_what_they_end(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    let (child, _) = running_child(s.as_ref(), &root, &root_key, "bot-c", 2).await;
    put(s.as_ref(), &root, "k", "1").await;
    put(s.as_ref(), &child, "k", "1").await;
    let summary = s
        .revoke(&Revocation {
            kind: RevocationKind::Mission,
            target: root.to_string(),
            reason: "went astray".into(),
            revoked_by: "alice".parse().unwrap(),
            at: T0.plus(10),
        })
        .await
        .unwrap();
    assert_eq!(summary.memory.len(), 2);
    assert!(summary.memory.iter().all(|d| d.entries == 1));
    assert_eq!(rows(&db, &root).await + rows(&db, &child).await, 0);

    // An agent's revocation: the memory of every mission it ends.
    let (a, _) = running_root(s.as_ref()).await;
    let (b, _) = running_root(s.as_ref()).await;
    put(s.as_ref(), &a, "k", "1").await;
    put(s.as_ref(), &b, "k", "1").await;
    let summary = s
        .revoke(&Revocation {
            kind: RevocationKind::Agent,
            target: "bot-a".into(),
            reason: "compromised".into(),
            revoked_by: "alice".parse().unwrap(),
            at: T0.plus(11),
        })
        .await
        .unwrap();
    assert_eq!(summary.memory.len(), 2);
    assert_eq!(rows(&db, &a).await + rows(&db, &b).await, 0);

    // A denial that ends the mission.
    let (m, m_key) = running_root_of(s.as_ref(), "bot-c").await;
    let (below, _) = running_child(s.as_ref(), &m, &m_key, "bot-d", 1).await;
    put(s.as_ref(), &m, "k", "1").await;
    put(s.as_ref(), &below, "k", "1").await;
    s.open_approval(&approval(&m), 10).await.unwrap();
    let (_, deleted) = s
        .resolve_approval_forgetting(
            "apr_mem",
            "alice",
            "no",
            &Resolution::Deny { end_mission: true },
            T0.plus(12),
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 2);
    assert_eq!(rows(&db, &m).await + rows(&db, &below).await, 0);
}

/// A running root mission of alice's `agent`.
async fn running_root_of(s: &dyn Store, agent: &str) -> (MissionId, mandate_core::MissionKey) {
    let (id, token) = new_mission(s, "alice", agent).await;
    (id, start(s, &token).await)
}

fn approval(mission: &MissionId) -> NewApproval {
    NewApproval {
        id: "apr_mem".into(),
        mission: mission.clone(),
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
    }
}

async fn a_sweep_deletes_the_memory_of_expired_missions(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (root, root_key) = running_root(s.as_ref()).await;
    // Expires at T0 + 2 + 600; its parent at T0 + 3600.
    let (child, _) = running_child(s.as_ref(), &root, &root_key, "bot-c", 2).await;
    put(s.as_ref(), &root, "k", "1").await;
    put(s.as_ref(), &child, "k", "1").await;
    put(s.as_ref(), &child, "k2", "1").await;
    assert!(
        s.sweep_expired_memory(T0.plus(601))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.sweep_expired_memory(T0.plus(602)).await.unwrap(),
        vec![MemoryDeleted {
            mission: child.clone(),
            entries: 2
        }]
    );
    assert_eq!(rows(&db, &child).await, 0);
    assert_eq!(rows(&db, &root).await, 1);
    let at: UnixTime = T0.plus(3_600);
    assert_eq!(s.sweep_expired_memory(at).await.unwrap().len(), 1);
    assert_eq!(rows(&db, &root).await, 0);
    assert!(s.sweep_expired_memory(at).await.unwrap().is_empty());
}

fn promotion(mission: &MissionId, keys: &[&str], at: u64) -> Promotion {
    Promotion {
        mission: mission.clone(),
        keys: keys.iter().map(|k| key(k)).collect(),
        by: "alice".parse().unwrap(),
        reason: "worth keeping".into(),
        now: T0.plus(at),
    }
}

async fn a_promotion_copies_entries_to_the_agents_notes_all_or_none(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (m, _) = running_root(s.as_ref()).await;
    put(s.as_ref(), &m, "plain", "\"fact\"").await;
    s.mark_taint(&m, &["web".into()], "mcp web tool fetch", T0.plus(6))
        .await
        .unwrap();
    s.memory_put(&entry(&m, HOSTILE_KEYS[2], "{\"from\": \"web\"}", false, 7))
        .await
        .unwrap();
    // A key that names nothing refuses the whole promotion.
    let refused = s
        .promote_notes(&promotion(&m, &["plain", "missing"], 8))
        .await;
    assert!(
        matches!(refused, Err(MemoryWriteError::NoSuchEntry(1))),
        "{refused:?}"
    );
    let agent = "bot-a".parse().unwrap();
    assert!(s.notes(&agent).await.unwrap().is_empty());

    let (to, notes) = s
        .promote_notes(&promotion(&m, &["plain", HOSTILE_KEYS[2]], 8))
        .await
        .unwrap();
    assert_eq!(to, agent);
    assert_eq!(notes.len(), 2);
    let tainted = s
        .note(&agent, &key(HOSTILE_KEYS[2]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tainted.value, "{\"from\": \"web\"}");
    assert_eq!(tainted.promoted_from, m);
    assert_eq!(tainted.promoted_by.as_str(), "alice");
    assert_eq!(tainted.promoted_at, T0.plus(8));
    assert_eq!(tainted.written_at, T0.plus(7));
    assert_eq!(tainted.reason, "worth keeping");
    assert_eq!(tainted.source, format!("wrote {}", HOSTILE_KEYS[2].len()));
    assert!(tainted.taint.unwrap().labels.contains("web"));
    let plain = s.note(&agent, &key("plain")).await.unwrap().unwrap();
    assert_eq!(plain.taint, None);

    // Notes outlive the mission; its memory does not.
    s.end_mission(&m, EndReason::Completed, "alice", T0.plus(9))
        .await
        .unwrap();
    assert_eq!(rows(&db, &m).await, 0);
    assert_eq!(s.notes(&agent).await.unwrap().len(), 2);
    // An ended mission promotes nothing.
    assert!(matches!(
        s.promote_notes(&promotion(&m, &["plain"], 10)).await,
        Err(MemoryWriteError::MissionNotActive)
    ));

    // A later promotion of the same key replaces the note.
    let (later, later_key) = running_root(s.as_ref()).await;
    put(s.as_ref(), &later, "plain", "\"newer fact\"").await;
    s.promote_notes(&promotion(&later, &["plain"], 11))
        .await
        .unwrap();
    let plain = s.note(&agent, &key("plain")).await.unwrap().unwrap();
    assert_eq!(
        (plain.value.as_str(), &plain.promoted_from),
        ("\"newer fact\"", &later)
    );

    // An ephemeral sub-agent keeps no notes.
    let (child, _) = running_child(s.as_ref(), &later, &later_key, "helper@", 1).await;
    put(s.as_ref(), &child, "k", "1").await;
    assert!(matches!(
        s.promote_notes(&promotion(&child, &["k"], 12)).await,
        Err(MemoryWriteError::EphemeralAgent)
    ));
}

async fn an_agents_notes_are_bounded(db: Db) {
    let s = db.store();
    seed_chain(s.as_ref()).await;
    let (m, _) = running_root(s.as_ref()).await;
    let keys: Vec<String> = (0..200).map(|i| format!("a{i:03}")).collect();
    for k in &keys {
        put(s.as_ref(), &m, k, "1").await;
    }
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    s.promote_notes(&promotion(&m, &all, 8)).await.unwrap();
    let (m2, _) = running_root(s.as_ref()).await;
    let more: Vec<String> = (0..57).map(|i| format!("b{i:03}")).collect();
    for k in &more {
        put(s.as_ref(), &m2, k, "1").await;
    }
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    let refused = s.promote_notes(&promotion(&m2, &more, 9)).await;
    assert!(
        matches!(&refused, Err(MemoryWriteError::Limit(d)) if d.contains("bot-a")),
        "{refused:?}"
    );
    let agent = "bot-a".parse().unwrap();
    assert_eq!(s.notes(&agent).await.unwrap().len(), 200);
    s.promote_notes(&promotion(&m2, &more[..56], 9))
        .await
        .unwrap();
    assert_eq!(s.notes(&agent).await.unwrap().len(), 256);
}
