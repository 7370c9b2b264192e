//! `mandate memory …` and `mandate notes …`: an agent's mission-scoped
//! memory, a person's review and promotion of it, and the agent's notes
//! (docs/memory.md).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use mandate_client::{Client, MissionAgent};
use mandate_core::Taint;
use mandate_core::wire::{MemoryEntryView, NoteEntryView, NoteView};
use serde_json::value::RawValue;

use crate::commands::{read_state, write_state};
use crate::output::{self, when};

#[derive(Debug, Subcommand)]
pub enum MemoryCmd {
    /// Agent side: keep VALUE (JSON) under KEY in the mission's memory,
    /// until the mission ends.
    Put {
        /// Any UTF-8, 1 to 256 bytes.
        key: String,
        /// The value: JSON (at most 64 KiB), or `-` (or nothing) to read it
        /// from standard input.
        value: Option<String>,
        /// Take the value as text, kept as a JSON string.
        #[arg(long)]
        text: bool,
        /// Let missions delegated below this one read it.
        #[arg(long)]
        shared: bool,
        /// Where the value came from (at most 200 characters, one line).
        #[arg(long)]
        source: Option<String>,
        /// The mission state file written by `mission start` (or handed
        /// over by `mandate launch`).
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
    /// Agent side: print one entry (its value; with --json, its
    /// provenance too).
    Get {
        key: String,
        /// A mission above this one, whose shared entries this one reads.
        #[arg(long)]
        mission: Option<String>,
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
    /// Agent side: the mission's entries with their provenance.
    List {
        /// A mission above this one, whose shared entries this one reads.
        #[arg(long)]
        mission: Option<String>,
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
    /// Agent side: forget one entry.
    Delete {
        key: String,
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
    /// Person side: a running mission's memory, each entry with its
    /// provenance and taint (to review before promoting).
    Show {
        /// The mission id (`msn_…`).
        mission: String,
    },
    /// Person side: keep entries of a running mission as its agent's
    /// notes, for its later missions.
    Promote {
        /// The mission id (`msn_…`).
        mission: String,
        /// The keys of the entries to keep.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotesCmd {
    /// The notes of the mission's agent: keys and provenance.
    List {
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
    /// One note's value (with --json, its provenance too). Reading a note
    /// that carries taint taints the mission.
    Get {
        key: String,
        #[arg(long, env = "MANDATE_STATE")]
        state: PathBuf,
    },
}

/// The mission in `state`, with a fresh credential (saved back if it was
/// refreshed).
async fn agent(state: &Path) -> anyhow::Result<MissionAgent> {
    let mut agent = MissionAgent::load(&read_state(state)?).await?;
    let before = agent.credential().to_owned();
    agent.fresh_credential().await?;
    if agent.credential() != before {
        write_state(state, &agent.save()?, false)?;
    }
    Ok(agent)
}

/// The value to keep: VALUE, or standard input for `-` or none.
fn value(value: Option<String>, text: bool) -> anyhow::Result<Box<RawValue>> {
    let raw = match value.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the value from standard input")?;
            if text {
                // The line a shell or an editor ends the input with.
                if s.ends_with('\n') {
                    s.pop();
                }
            }
            s
        }
        Some(v) => v.to_owned(),
    };
    if text {
        return Ok(serde_json::value::to_raw_value(&raw)?);
    }
    RawValue::from_string(raw.trim().to_owned())
        .map_err(|e| anyhow!("the value is not JSON ({e}); to keep text, add --text"))
}

/// Text for a terminal: control characters (C0 and C1) and bidirectional
/// formatting characters escaped.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A key for a terminal: as it is if it is plain, else quoted and escaped.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_alphanumeric() || "-._~/:@+".contains(c));
    if plain {
        k.to_owned()
    } else {
        mandate_core::json_quoted(k)
    }
}

fn taint(t: Option<&Taint>) -> String {
    match t {
        Some(t) => format!("TAINTED {}", printable(&t.describe())),
        None => "none".into(),
    }
}

/// A value on one line, cut at `max` characters.
fn short(json: &str, max: usize) -> String {
    let one_line: String = printable(&json.replace(['\n', '\r', '\t'], " "));
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    } else {
        one_line
    }
}

fn entry_details(e: &MemoryEntryView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<8} {v}\n"));
    line("value", short(e.value.get(), 100));
    line(
        "source",
        if e.source.is_empty() {
            "(none stated)".into()
        } else {
            printable(&e.source)
        },
    );
    line("shared", if e.shared { "yes" } else { "no" }.into());
    line("taint", taint(e.taint.as_ref()));
    line(
        "written",
        format!(
            "{} (first {}), {} bytes, sha256 {}",
            when(e.updated_at),
            when(e.created_at),
            e.bytes,
            e.value_s256
        ),
    );
    out
}

fn note_details(n: &NoteView) -> String {
    format!(
        "  source   {}\n  taint    {}\n  from     mission {} (written {})\n  promoted by {} at {}, {} bytes, sha256 {}\n",
        if n.source.is_empty() {
            "(none stated)".into()
        } else {
            printable(&n.source)
        },
        taint(n.taint.as_ref()),
        n.promoted_from,
        when(n.written_at),
        n.promoted_by,
        when(n.promoted_at),
        n.bytes,
        n.value_s256
    )
}

pub async fn memory(
    client: impl Fn() -> anyhow::Result<Client>,
    cmd: MemoryCmd,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        MemoryCmd::Put {
            key: k,
            value: v,
            text,
            shared,
            source,
            state,
        } => {
            let v = value(v, text)?;
            let agent = agent(&state).await?;
            let e = agent.memory_put(&k, &v, shared, source.as_deref()).await?;
            if json {
                output::json(&e)?;
            } else {
                println!(
                    "kept {} in mission {} ({} bytes{}{})",
                    key(&e.key),
                    agent.mission_id(),
                    e.bytes,
                    if e.shared { ", shared" } else { "" },
                    e.taint
                        .as_ref()
                        .map(|t| format!(
                            ", tainted: {}",
                            t.labels.iter().cloned().collect::<Vec<_>>().join(", ")
                        ))
                        .unwrap_or_default()
                );
            }
        }
        MemoryCmd::Get {
            key: k,
            mission,
            state,
        } => {
            let agent = agent(&state).await?;
            let e = match mission {
                Some(m) => agent.memory_get_of(&m, &k).await?,
                None => agent.memory_get(&k).await?,
            };
            if json {
                output::json(&e)?;
            } else {
                // The value, as kept: JSON, which escapes what it must.
                println!("{}", printable(e.value.get()));
            }
        }
        MemoryCmd::List { mission, state } => {
            let agent = agent(&state).await?;
            let list = match mission {
                Some(m) => agent.memory_list_of(&m).await?,
                None => agent.memory_list().await?,
            };
            if json {
                output::json(&list)?;
            } else if list.entries.is_empty() {
                println!("mission {} keeps no memory", list.mission);
            } else {
                for e in &list.entries {
                    println!("{}", key(&e.key));
                    print!("{}", entry_details(e));
                }
            }
        }
        MemoryCmd::Delete { key: k, state } => {
            let agent = agent(&state).await?;
            agent.memory_delete(&k).await?;
            if json {
                output::json(&serde_json::json!({ "deleted": k }))?;
            } else {
                println!("forgot {}", key(&k));
            }
        }
        MemoryCmd::Show { mission } => {
            let list = client()?.mission_memory(&mission).await?;
            if json {
                output::json(&list)?;
            } else if list.entries.is_empty() {
                println!(
                    "mission {} keeps no memory (a mission's memory ends with it)",
                    list.mission
                );
            } else {
                let tainted = list.entries.iter().filter(|e| e.taint.is_some()).count();
                println!(
                    "mission {}: {} entries{}",
                    list.mission,
                    list.entries.len(),
                    if tainted > 0 {
                        format!(
                            ", {tainted} written after the mission read untrusted content (a note promoted from one taints every mission that reads it)"
                        )
                    } else {
                        String::new()
                    }
                );
                for e in &list.entries {
                    println!("{}", key(&e.key));
                    print!("{}", entry_details(e));
                }
            }
        }
        MemoryCmd::Promote {
            mission,
            keys,
            reason,
        } => {
            let done = client()?
                .promote_memory(&mission, &keys, reason.as_deref())
                .await?;
            if json {
                output::json(&done)?;
            } else {
                println!(
                    "kept {} entries of mission {} as notes of agent {}:",
                    done.notes.len(),
                    done.mission,
                    done.agent
                );
                for n in &done.notes {
                    println!("{}", key(&n.key));
                    print!("{}", note_details(n));
                }
            }
        }
    }
    Ok(())
}

pub async fn notes(cmd: NotesCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        NotesCmd::List { state } => {
            let agent = agent(&state).await?;
            let notes = agent.notes().await?;
            if json {
                output::json(&notes)?;
            } else if notes.notes.is_empty() {
                println!("agent {} has no notes", notes.agent);
            } else {
                for n in &notes.notes {
                    println!("{}", key(&n.key));
                    print!("{}", note_details(n));
                }
            }
        }
        NotesCmd::Get { key: k, state } => {
            let agent = agent(&state).await?;
            let n: NoteEntryView = agent.note(&k).await?;
            if json {
                output::json(&n)?;
            } else {
                if let Some(t) = &n.taint {
                    eprintln!(
                        "note {} came from untrusted content ({}); this mission is now tainted with it",
                        key(&n.key),
                        printable(&t.describe())
                    );
                }
                println!("{}", printable(n.value.get()));
            }
        }
    }
    Ok(())
}
